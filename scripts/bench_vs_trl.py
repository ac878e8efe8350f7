"""Benchmark `tfpack pack` against the packing a trainer already does: TRL's `SFTTrainer` preparation.

    pip install -e '.[bench]'                    # TRL and datasets, for this script only
    python scripts/bench_vs_trl.py               # both data sets, every route
    python scripts/bench_vs_trl.py --sets single --routes trl static

Data (../shared/data/gsm8k_train.jsonl, converted in a temporary directory):
  single   GSM8K train in TRL's conversational prompt/completion form (one user and one assistant message)
  chats    the same problems joined three at a time into user/assistant × 3 conversations (multi-turn)
Tokenizer: a byte-level BPE trained here on the data (tests/packing/templates.py `build_bpe`, no download) with TRL's
stored Qwen2.5 chat template, saved to a directory both tools load by path; `--max-len` 2048.

Routes, each in the same run, so the ratios compare like with like on a shared machine:
  trl      in-process, timed from `load_dataset` to `SFTTrainer(...)` built (imports and the tiny model built
           before the clock starts; a fresh datasets cache): `packing=True, packing_strategy="bfd"`, and
           `completion_only_loss=True` (single) or the {% generation %} training template with
           `assistant_only_loss=True` (chats)
  input    `tfpack pack INPUT` with its defaults, one whole process (imports included)
  input-static  `tfpack pack INPUT --model static`, one whole process
  static   `tfpack embed INPUT --model static` then `tfpack pack RUN`, two whole processes
Per route: wall and CPU seconds (CPU time is the steadier figure on a shared machine), packs, fill (tokens /
(packs × max-len)) and, for tfpack, the relatedness `tfpack stats` reports (mean cosine similarity inside packs, and
inside random packs of the same sizes, in the run's embedding space), with `pack RUN`'s step times.
Then the tokenizer throughput, in this process, best of --repeat: the fast tokenizer's own batched `__call__` on the
texts tfpack renders, against tfpack's tokenize phase on the same samples (read, render, encode, labels, store: what
the `tokenize` step of `pack` runs) and against the whole `pack RUN` process above.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from benchenv import cpu_line, load_gallery

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"
SETS = ("single", "chats")
ROUTES = ("trl", "input", "input-static", "static")


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def write_sets(tmp: Path, n: int | None) -> dict[str, Path]:
    rows = [orjson.loads(line) for line in GSM8K.read_bytes().splitlines()][:n]
    single = tmp / "gsm8k_prompt_completion.jsonl"
    single.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "prompt": [{"role": "user", "content": r["question"]}],
                    "completion": [{"role": "assistant", "content": r["answer"]}],
                }
            )
            + b"\n"
            for r in rows
        )
    )
    chats = tmp / "gsm8k_chats.jsonl"
    lines = []
    for i in range(0, len(rows) - 2, 3):
        messages = []
        for r in rows[i : i + 3]:
            messages += [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]
        lines.append(orjson.dumps({"messages": messages}) + b"\n")
    chats.write_bytes(b"".join(lines))
    return {"single": single, "chats": chats}


def tokenizers(tmp: Path, data: Path) -> tuple[Path, Path]:
    """(tokenizer with TRL's Qwen2.5 template, the same with TRL's {% generation %} training variant)."""
    from trl import chat_template_utils as trl_templates

    gallery = load_gallery()
    rows = [orjson.loads(line) for line in data.read_bytes().splitlines()[:2000]]
    corpus = [m["content"] for r in rows for m in [*r["prompt"], *r["completion"]]]
    bpe = gallery.build_bpe(tmp / "bpe", corpus)
    plain = gallery.with_template(bpe, tmp / "qwen", trl_templates.qwen2_5_chat_template, "<|im_end|>", None)
    training = gallery.with_template(
        bpe, tmp / "qwen-training", trl_templates.qwen2_5_training_chat_template, "<|im_end|>", None
    )
    return plain, training


def trl_route(data: Path, tokenizer: Path, multi_turn: bool, max_len: int, tmp: Path) -> dict[str, Any]:
    import pyarrow.compute as pc
    from datasets import load_dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    cache = Path(tempfile.mkdtemp(dir=tmp, prefix="datasets-cache"))
    hf = AutoTokenizer.from_pretrained(tokenizer)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2
        )
    )
    loss = {"assistant_only_loss": True} if multi_turn else {"completion_only_loss": True}
    started, cpu = time.perf_counter(), cpu_seconds()
    dataset = load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
    args = SFTConfig(
        output_dir=str(tmp / "trl-out"),
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=max_len,
        packing=True,
        packing_strategy="bfd",
        **loss,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=hf)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    packed = trainer.train_dataset
    tokens = pc.sum(pc.list_value_length(packed.data.column("input_ids"))).as_py()
    return {"seconds": seconds, "cpu": cpu, "packs": len(packed), "fill": tokens / (len(packed) * max_len)}


def tfpack_process(args: list[str]) -> tuple[float, float, dict[str, Any]]:
    """One whole `tfpack` process (this checkout's code): its wall and CPU seconds and its --json output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-m", "tfpack", *args, "--json"], capture_output=True, text=True, env=env)
    seconds, cpu = time.perf_counter() - started, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    if result.returncode != 0:
        raise SystemExit(f"tfpack {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return seconds, cpu, orjson.loads(result.stdout.strip().splitlines()[-1])


def tfpack_routes(routes: list[str], data: Path, tokenizer: Path, max_len: int, tmp: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pack_args = ["--tokenizer", str(tokenizer), "--max-len", str(max_len), "--overwrite"]
    if "input" in routes:
        seconds, cpu, out = tfpack_process(["pack", str(data), "-o", str(tmp / "input-out"), *pack_args])
        found["input"] = {"seconds": seconds, "cpu": cpu, **summary(out, tmp / "input-out")}
    if "input-static" in routes:
        out_dir = tmp / "input-static-out"
        seconds, cpu, out = tfpack_process(["pack", str(data), "-o", str(out_dir), "--model", "static", *pack_args])
        found["input-static"] = {"seconds": seconds, "cpu": cpu, **summary(out, out_dir)}
    if "static" in routes:
        embed_seconds, embed_cpu, _ = tfpack_process(["embed", str(data), "-o", str(tmp / "run"), "--model", "static"])
        seconds, cpu, out = tfpack_process(["pack", str(tmp / "run"), "-o", str(tmp / "static-out"), *pack_args])
        found["static"] = {"seconds": embed_seconds + seconds, "cpu": embed_cpu + cpu, "embed": embed_seconds}
        found["static"] |= {"pack": seconds, "pack_cpu": cpu, "steps": out["step_seconds"]}
        found["static"] |= summary(out, tmp / "static-out")
    return found


def summary(out: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    _, _, stats = tfpack_process(["stats", str(out_dir)])
    return {
        "packs": out["packs"],
        "fill": out["fill_rate"],
        "similarity": stats["mean_pack_similarity"],
        "random": stats["random_pack_similarity"],
    }


def tokenizer_throughput(run: Path, tokenizer: Path, repeat: int) -> dict[str, float]:
    """Wall and CPU seconds (best of `repeat`, alternating) of the tokenizer's own batched `__call__` on the texts
    tfpack renders for `run`'s samples, and of tfpack's tokenize phase on the same samples (`tokenize_samples`: read,
    render, encode, labels, store), with the number of texts."""
    from transformers import AutoTokenizer

    from tfpack.config import PackConfig
    from tfpack.ingest.samples import iter_sample_batches
    from tfpack.packing.stage import tokenize_samples
    from tfpack.packing.tokenizer import Rendered, load_tokenizer, render, set_tokenizer_threads
    from tfpack.workdir import SAMPLES_FILE

    cfg = PackConfig(tokenizer=str(tokenizer))
    set_tokenizer_threads(cfg.workers)
    ours = load_tokenizer(cfg.tokenizer, cfg.template)
    batches = [
        [r.text for r in (render(c, ours, cfg.train_on) for c in conversations) if isinstance(r, Rendered)]
        for _, conversations in iter_sample_batches(run / SAMPLES_FILE, cfg.batch_size)
    ]
    hf = AutoTokenizer.from_pretrained(tokenizer)
    best = {"raw": float("inf"), "raw_cpu": float("inf"), "tokenize": float("inf"), "tokenize_cpu": float("inf")}
    for _ in range(repeat):
        started, cpu = time.perf_counter(), cpu_seconds()
        for texts in batches:
            hf(texts, add_special_tokens=False)
        best["raw"] = min(best["raw"], time.perf_counter() - started)
        best["raw_cpu"] = min(best["raw_cpu"], cpu_seconds() - cpu)
        with tempfile.TemporaryDirectory() as store:
            started, cpu = time.perf_counter(), cpu_seconds()
            tokenize_samples(run / SAMPLES_FILE, ours, cfg, Path(store))
            best["tokenize"] = min(best["tokenize"], time.perf_counter() - started)
            best["tokenize_cpu"] = min(best["tokenize_cpu"], cpu_seconds() - cpu)
    return best | {"n": sum(len(texts) for texts in batches)}


def report(name: str, n: int, results: dict[str, Any], max_len: int) -> None:
    labels = {
        "trl": "TRL SFTTrainer preparation, in-process",
        "input": "tfpack pack INPUT (defaults), whole process",
        "input-static": "tfpack pack INPUT --model static, one process",
        "static": "tfpack embed --model static + pack RUN",
    }
    print(f"\n{name}: {n} samples, max-len {max_len}")
    print(
        f"  {'route':<46}{'seconds':>9}{'× TRL':>7}{'CPU s':>8}{'× TRL':>7}{'packs':>7}{'fill':>8}"
        f"{'pack sim':>10}{'random':>8}"
    )
    trl = results.get("trl")
    for route, r in results.items():
        ratios = f"{r['seconds'] / trl['seconds']:>7.2f}" if trl else f"{'':>7}"
        cpu_ratio = f"{r['cpu'] / trl['cpu']:>7.2f}" if trl else f"{'':>7}"
        sims = f"{r['similarity']:>10.4f}{r['random']:>8.4f}" if "similarity" in r else ""
        print(
            f"  {labels[route]:<46}{r['seconds']:>9.2f}{ratios}{r['cpu']:>8.2f}{cpu_ratio}{r['packs']:>7}"
            f"{r['fill']:>8.4f}{sims}"
        )
    if "static" in results:
        s = results["static"]
        steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in s["steps"].items())
        print(f"    embed {s['embed']:.2f} s + pack RUN {s['pack']:.2f} s (its steps, s: {steps})")


def report_throughput(t: dict[str, float], pack_run: dict[str, Any]) -> None:
    n = t["n"]
    print(f"  tokenizer throughput on the {n} rendered texts (samples/s; best of the repeats, wall | CPU):")
    print(f"    raw tokenizer __call__, batched     {n / t['raw']:>8,.0f} | {n / t['raw_cpu']:>8,.0f}")
    print(
        f"    tfpack tokenize phase               {n / t['tokenize']:>8,.0f} | {n / t['tokenize_cpu']:>8,.0f}"
        f"   = {t['raw'] / t['tokenize']:.2f} | {t['raw_cpu'] / t['tokenize_cpu']:.2f} of raw"
    )
    whole, whole_cpu = pack_run["pack"], pack_run["pack_cpu"]
    print(
        f"    whole pack RUN process              {n / whole:>8,.0f} | {n / whole_cpu:>8,.0f}"
        f"   = {t['raw'] / whole:.2f} | {t['raw_cpu'] / whole_cpu:.2f} of raw"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--n", type=int, default=None, help="first N GSM8K problems (default: all 7,473)")
    parser.add_argument("--repeat", type=int, default=2, help="repeats of the tokenizer throughput comparison")
    args = parser.parse_args()
    if not GSM8K.is_file():
        raise SystemExit(f"{GSM8K} not found")
    import datasets
    import trl

    datasets.disable_progress_bars()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    print(f"CPU: {cpu_line()}")
    print(f"TRL {trl.__version__}; tfpack from {ROOT}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sets = write_sets(tmp, args.n)
        plain, training = tokenizers(tmp, sets["single"])
        for name in args.sets:
            data, work = sets[name], tmp / name
            work.mkdir()
            results: dict[str, Any] = {}
            if "trl" in args.routes:
                trl_tokenizer = training if name == "chats" else plain
                results["trl"] = trl_route(data, trl_tokenizer, name == "chats", args.max_len, work)
            results |= tfpack_routes(args.routes, data, plain, args.max_len, work)
            report(name, len(data.read_bytes().splitlines()), results, args.max_len)
            if "static" in results:
                report_throughput(tokenizer_throughput(work / "run", plain, args.repeat), results["static"])


if __name__ == "__main__":
    main()
