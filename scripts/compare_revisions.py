"""Run the same inputs and flags through two revisions of tfpack and compare what they write, byte for byte.

A refactoring must not change a single output byte. This script checks out `--base` (any git revision) in a
temporary worktree, runs `python -m tfpack` from it and from the current working tree (same interpreter, same
installed dependencies) over one embed run and a matrix of `order` and `pack` flag sets, and compares every file
each run writes, except the manifests' timings, the tfpack version they record and the run's own directory in
the paths they record.

    python scripts/compare_revisions.py --base main            # demo data, 400 samples
    python scripts/compare_revisions.py --base v0.1 --n 1600 --keep /tmp/cmp
    python scripts/compare_revisions.py --base main --data ../shared/data/gsm8k_train.jsonl --limit 2000

Prints one line per run (identical or the differing files) and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
# Manifest fields that legitimately differ between two runs of the same code: wall times and the version string.
VOLATILE = {"seconds", "embed_seconds", "walk_seconds", "tokenize_seconds", "write_seconds", "tfpack_version"}

PACK_RUNS: dict[str, list[str]] = {
    "default": [],
    "segment": ["--attention", "segment"],
    "chatml-all": ["--template", "chatml", "--train-on", "all"],
    "plain-completion": ["--template", "plain", "--train-on", "completion"],
    "short-drop": ["--max-len", "128", "--long", "drop"],
    "short-truncate": ["--max-len", "128"],
    "threshold-0.8": ["--threshold", "0.8", "--window", "2"],
    "greedy": ["--threshold", "none"],
    "exact": ["--exact"],
    "buckets": ["--buckets", "4"],
    "pack-filter": ["--pack-filter", "0.9"],
    "small-shards": ["--shard-packs", "7", "--lookahead", "0", "--pack-seed", "3"],
    "dedup": ["--dedup", "0.9"],
    "dedup-prompt-longest": ["--dedup", "0.95", "--dedup-keep", "longest", "--dedup-on", "prompt"],
    "decontaminate": ["--decontaminate", "{bench}"],
    "decontaminate-report": ["--decontaminate", "{bench}", "--decontaminate-report", "--dedup", "0.9"],
    "epochs": ["--epochs", "2"],
    "weights": ["--weights", "{first}=2"],
}
SWEEP = ["--thresholds", "0.5,auto,none", "--json"]
ORDER_RUNS: dict[str, list[str]] = {
    "auto": [],
    "exact-start": ["--exact", "--start", "5"],
    "ivf": ["--knn", "ivf", "--threshold", "0.9"],
}


def python_in(tree: Path, *args: str, check: bool) -> subprocess.CompletedProcess[str]:
    """`python ARGS` importing from `tree`: it is first on PYTHONPATH and the working directory (which `python -m`
    and `-c` put before everything else on the import path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *args], env=env, cwd=tree, capture_output=True, text=True, check=check)


def tfpack(tree: Path, *args: str) -> str:
    """`python -m tfpack ARGS` from `tree`, its stdout; raises with its stderr on failure."""
    done = python_in(tree, "-m", "tfpack", *args, "--quiet", check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: tfpack {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def digests(out: Path, work: Path) -> dict[str, str]:
    """sha256 of every file under `out` (manifests without their volatile fields, `work` in paths read as WORK), by
    relative path."""
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "manifest.json":
            data = orjson.dumps(
                strip(orjson.loads(data.replace(str(work).encode(), b"WORK"))), option=orjson.OPT_SORT_KEYS
            )
        found[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return found


def strip(obj: object) -> object:
    """`obj` without the VOLATILE keys, at any depth."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def run_all(tree: Path, data: list[Path], bench: Path, work: Path) -> dict[str, dict[str, str]]:
    """Every run of the matrix with the code in `tree` (`bench`: the --decontaminate file); digests per run name."""
    results = {}
    embed_dir = work / "embed"
    imported = python_in(tree, "-c", "import tfpack; print(tfpack.__file__)", check=True).stdout.strip()
    if not Path(imported).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: python imports tfpack from {imported}, not from this tree")
    tfpack(tree, "embed", *map(str, data), "-o", str(embed_dir))
    results["embed"] = digests(embed_dir, work)
    for name, flags in ORDER_RUNS.items():
        out = work / f"order-{name}.npy"
        tfpack(tree, "order", str(embed_dir), "-o", str(out), *flags)
        results[f"order {name}"] = {out.name: hashlib.sha256(out.read_bytes()).hexdigest()}
    for name, flags in PACK_RUNS.items():
        out = work / f"pack-{name}"
        flags = [f.format(bench=bench, first=data[0].stem) for f in flags]
        tfpack(tree, "pack", str(embed_dir), "-o", str(out), "--tokenizer", "packaged-minilm", *flags)
        results[f"pack {name}"] = digests(out, work)
    out = work / "pack-inputs"  # the one-command path: input files embedded inside `pack`
    tfpack(tree, "pack", *map(str, data), "-o", str(out), "--tokenizer", "packaged-minilm", "--model", "static")
    results["pack inputs"] = digests(out, work)
    rows = tfpack(tree, "sweep", str(embed_dir), "--tokenizer", "packaged-minilm", *SWEEP)
    results["sweep"] = {"stdout": hashlib.sha256(rows.encode()).hexdigest()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare the working tree against")
    parser.add_argument("--n", type=int, default=400, help="demo samples over the four input files (default 400)")
    parser.add_argument("--keep", type=Path, help="keep the outputs under this directory (default: a temp dir)")
    parser.add_argument("--data", type=Path, nargs="+", help="input files to use instead of the demo data")
    parser.add_argument("--limit", type=int, help="with --data: the first N lines of each (JSONL) file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        base_tree = Path(tmp) / "base-tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), args.base], check=True
        )
        try:
            data_dir = work / "data"
            if args.data:
                data_dir.mkdir(parents=True)
                for given in args.data:
                    lines = given.read_bytes().splitlines(keepends=True)
                    (data_dir / given.name).write_bytes(b"".join(lines[: args.limit]))
            else:
                subprocess.run(
                    [sys.executable, str(ROOT / "scripts/make_demo_data.py"), "--out", str(data_dir)]
                    + ["--n", str(args.n)],
                    check=True,
                    capture_output=True,
                )
            data = sorted(data_dir.iterdir())
            bench = work / "bench.jsonl"  # the first records of a JSONL input: decontamination has something to find
            first_jsonl = next(p for p in data if p.suffix == ".jsonl")
            bench.write_bytes(b"".join(first_jsonl.read_bytes().splitlines(keepends=True)[:10]))
            base = run_all(base_tree, data, bench, work / "base")
            head = run_all(ROOT, data, bench, work / "head")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=True)
    differing = 0
    for name in base:
        same = base[name] == head[name]
        differing += not same
        detail = (
            f"{len(base[name])} files identical"
            if same
            else "DIFFER: "
            + ", ".join(
                sorted(k for k in base[name].keys() | head[name].keys() if base[name].get(k) != head[name].get(k))
            )
        )
        print(f"{name:24s} {detail}")
    print(f"{len(base) - differing} of {len(base)} runs byte-identical to {args.base}")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
