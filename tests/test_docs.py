"""The README's code is what runs: its TRL and Hugging Face Trainer recipes are executed as written; its links and
those of docs/ lead somewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_llama

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(marker: str) -> list[str]:
    """The README's ```python blocks that contain `marker`."""
    return [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if marker in b]


@pytest.mark.slow  # builds and steps a TRL trainer
def test_readme_trl_recipe_runs_as_written(
    packed_default: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TRL block, executed exactly as the README prints it, in a directory where `packed/` is a `tfpack pack`
    output, with `model` and `tokenizer` bound (a tiny random Llama; the packaged tokenizer). The test budget (2 steps
    on the CPU, no reporting, no checkpoint) comes from the `SFTConfig` the block imports, not from edited text."""
    trl = pytest.importorskip("trl")
    from tfpack.packing.tokenizer import load_tokenizer

    class BudgetedConfig(trl.SFTConfig):  # type: ignore[misc]
        def __post_init__(self) -> None:
            self.max_steps, self.report_to, self.use_cpu, self.save_strategy = 2, [], True, "no"
            super().__post_init__()

    [block] = python_blocks("SFTTrainer")
    assert "from trl import SFTConfig" in block
    monkeypatch.setattr(trl, "SFTConfig", BudgetedConfig)
    os.symlink(packed_default, tmp_path / "packed")
    monkeypatch.chdir(tmp_path)
    namespace = {"model": tiny_llama(), "tokenizer": load_tokenizer("packaged-minilm", None).hf}
    exec(compile(block, str(README), "exec"), namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer.args, BudgetedConfig) and trainer.args.padding_free
    assert trainer.state.global_step == 2 and np.isfinite(trainer.state.log_history[-1]["train_loss"])


@pytest.mark.slow  # builds and steps an HF trainer
def test_readme_hf_trainer_recipe_runs_as_written(
    packed_default: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hugging Face `Trainer` block, executed as the README prints it, with `model` bound; the same test budget
    through the `TrainingArguments` it imports, and its `Trainer` recorded to check the steps ran."""
    import transformers

    class BudgetedArguments(transformers.TrainingArguments):
        def __post_init__(self) -> None:
            self.max_steps, self.report_to, self.use_cpu, self.save_strategy = 2, [], True, "no"
            super().__post_init__()

    trainers: list[transformers.Trainer] = []

    class RecordedTrainer(transformers.Trainer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            trainers.append(self)

    [block] = python_blocks("PackedCollator")
    assert "from transformers import Trainer, TrainingArguments" in block
    monkeypatch.setattr(transformers, "TrainingArguments", BudgetedArguments)
    monkeypatch.setattr(transformers, "Trainer", RecordedTrainer)
    os.symlink(packed_default, tmp_path / "packed")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"model": tiny_llama()})
    [trainer] = trainers
    assert trainer.state.global_step == 2 and np.isfinite(trainer.state.log_history[-1]["train_loss"])


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page: each heading lowercased, punctuation but `-` and `_` dropped, spaces to `-`
    (outside code blocks), plus explicit `<a id=...>` anchors."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    return slugs | set(re.findall(r'<a id="([^"]+)">', prose))


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the README and of docs/*.md names a file that exists and, with `#anchor`, a heading
    of that file: the README sends readers to docs/ for what moved there, so a dead link loses it."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    assert links or page != README
    for target in links:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to missing {path}"
        if anchor:
            assert anchor in anchors(file.read_text()), f"{page.name}: no heading #{anchor} in {file.name}"
