"""The package layout is the pipeline: stage folders import only earlier stages, shared modules import no stage,
no import cycle (imports inside functions count), and Ray is imported by `tfpack.parallel` alone."""

from __future__ import annotations

import ast
from pathlib import Path

import tfpack

PACKAGE = Path(tfpack.__file__).parent
STAGES = ["ingest", "embedding", "ordering", "filters", "packing", "report"]
# Modules at the top that stages share; they import no stage (cli and the public API sit above every stage).
SHARED = ["arrays", "config", "options", "errors", "progress", "workdir", "parallel", "data", "export", "version"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}
MODULES = set(GRAPH)


PACKAGES = {f"tfpack.{stage}" for stage in STAGES}  # their `__init__` holds a docstring only


def edges(module: str) -> set[str]:
    """The tfpack modules `module` imports."""
    return {m for m in GRAPH[module] if m in MODULES and m != module and m not in PACKAGES}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in STAGES else None


def test_stages_import_only_earlier_stages() -> None:
    wrong = []
    for module in MODULES:
        own = stage_of(module)
        for target in edges(module):
            other = stage_of(target)
            if own and other and STAGES.index(other) > STAGES.index(own):
                wrong.append(f"{module} -> {target}")
            if module.removeprefix("tfpack.") in SHARED and other:
                wrong.append(f"{module} (shared) -> {target}")
    assert not wrong, wrong


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges(module)):
            if state.get(target) == 1 and not cycle:
                cycle.extend(trail[trail.index(target) :] + [module, target] if target in trail else [module, target])
            elif target not in state:
                visit(target, trail + [module])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [])
    assert not cycle, " -> ".join(cycle)


def test_ray_is_imported_by_the_engine_module_only() -> None:
    users = sorted(m for m, found in GRAPH.items() if any(i == "ray" or i.startswith("ray.") for i in found))
    assert users == ["tfpack.parallel"]
    assert not {t for t in edges("tfpack.parallel") if stage_of(t)}


def test_stage_folders_are_listed() -> None:
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(STAGES)
