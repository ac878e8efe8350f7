"""`--backend auto` on CPU: the fastest exact route for this CPU, measured once and cached.

Which CPU route is fastest depends on the CPU more than on anything tfpack can read from it: on an AVX2-only EPYC
torch, ONNX Runtime and OpenVINO fp32 measured within 20% of each other (plain sentence-transformers already runs
at ~60% of that CPU's fp32 GEMM peak), while on a CPU with native bf16 OpenVINO's bf16 measured 3.5× torch
(scripts/bench_embed.py). So instead of guessing from CPU flags, a run of at least MEASURE_FROM_SAMPLES samples
times each installed exact route (OpenVINO at the CPU's native precision, the fp32 ONNX export in ONNX Runtime,
torch fp32) on MEASURE_TEXTS of its own texts, takes the fastest, and caches the choice keyed by the CPU, the thread
count, the model and the library versions; later runs on the same machine reuse it without measuring. `onnx-int8`
is never picked: its recall@10 against fp32 measured below 0.9. Smaller runs, where the measurement would cost more
than it can save, use a cached choice when there is one, else the fixed order OpenVINO, ONNX Runtime, torch.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from tfpack.config import EmbedConfig
from tfpack.embedding.encoders import Encoder, encode_texts, load_encoder
from tfpack.embedding.models import cache_root, installed, model_key, resolve_backend, resolve_model
from tfpack.errors import ConfigError, DependencyError
from tfpack.workdir import short_hash

MEASURE_FROM_SAMPLES = 10_000  # below this a run takes the cached or fixed-order route instead of timing routes
MEASURE_TEXTS = 192  # texts timed per route: ~6 s a route on a 2-core AVX2 machine
MEASURE_ROUNDS = 3  # the texts are timed in this many parts, the routes interleaved
EXACT_CPU_ROUTES = ("openvino", "onnx", "torch")  # fixed order: the choice when no measurement is made
ROUTE_MODULES = {"openvino": ("openvino", "onnx", "onnxscript"), "onnx": ("onnxruntime", "onnx", "onnxscript")}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_identity() -> str:
    """The CPU model name, the flags that change which route is fastest, and the torch thread count.

    >>> "threads=" in cpu_identity()
    True
    """
    import torch

    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return f"{name} | {' '.join(f for f in CPU_FLAGS if f in flags)} | threads={torch.get_num_threads()}"


def available_routes() -> list[str]:
    """The exact CPU routes whose libraries are installed, in the fixed order."""
    return [r for r in EXACT_CPU_ROUTES if installed(*ROUTE_MODULES.get(r, ()))]


def choice_file(cfg: EmbedConfig) -> Path:
    """Where the measured choice for `cfg`'s model on this CPU is cached."""
    versions = [f"{lib}=={metadata.version(lib)}" for lib in ("torch", "onnxruntime", "openvino") if installed(lib)]
    key = short_hash(
        "\n".join(
            [
                cpu_identity(),
                *versions,
                f"max_seq_length={cfg.max_seq_length}",
                f"batch_size={cfg.batch_size}",
                model_key(resolve_model(cfg.model), ("torch",)),
            ]
        )
    )
    return cache_root() / "routes" / f"{key}.json"


def measure_routes(cfg: EmbedConfig, texts: list[str]) -> dict[str, Any]:
    """Samples/s of each available route on `texts`; a route that cannot load is listed under "failed" with its
    error instead.

    Every route is warmed up, then `texts` are timed in MEASURE_ROUNDS parts, each part by every route in a rotated
    order, so a change in the machine's speed during the measurement (a neighbour's job, frequency scaling) falls
    on all routes alike rather than on whichever was timed last.
    """
    encoders: dict[str, tuple[Encoder, int]] = {}
    failed: dict[str, str] = {}
    for route in available_routes():
        try:
            model, resolved = load_encoder(replace(cfg, backend=route, device="cpu"))
        except (ConfigError, DependencyError, OSError, RuntimeError) as e:
            failed[route] = str(e).splitlines()[0] if str(e) else type(e).__name__
            continue
        encoders[route] = model, resolved["batch_size"]
        encode_texts(model, texts[: resolved["batch_size"]], resolved["batch_size"])
    seconds = dict.fromkeys(encoders, 0.0)
    names = list(encoders)
    for part in range(MEASURE_ROUNDS):
        chunk = texts[part::MEASURE_ROUNDS]
        turn = part % max(len(names), 1)
        for route in names[turn:] + names[:turn]:
            model, batch_size = encoders[route]
            started = time.perf_counter()
            encode_texts(model, chunk, batch_size)
            seconds[route] += time.perf_counter() - started
    return {"samples_per_s": {r: round(len(texts) / t, 2) for r, t in seconds.items()}, "failed": failed}


def choose_backend(cfg: EmbedConfig, n: int, sample_texts: Callable[[], list[str]]) -> tuple[str, dict[str, Any]]:
    """The backend a CPU run of `n` samples uses for `--backend auto`, and how it was chosen (for the manifest).

    `sample_texts()` is called only when routes are measured: up to MEASURE_TEXTS of the run's own texts.
    """
    fixed = resolve_backend("auto", "cpu")
    path = choice_file(cfg)
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("backend") in available_routes():
                return cached["backend"], {**cached, "by": "cached", "cache": str(path)}
        except (OSError, ValueError):
            pass  # a damaged cache entry is measured again (or ignored below the measuring size)
    if n < MEASURE_FROM_SAMPLES:
        return fixed, {"backend": fixed, "by": f"fixed order (fewer than {MEASURE_FROM_SAMPLES:,} samples)"}
    texts = sample_texts()
    measured = measure_routes(cfg, texts)
    rates = measured["samples_per_s"]
    if not rates:
        return fixed, {"backend": fixed, "by": "fixed order (no route could be measured)", **measured}
    best = max(rates, key=rates.__getitem__)
    record = {"backend": best, "cpu": cpu_identity(), "texts": len(texts), **measured}
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    part.write_text(json.dumps(record, indent=1))
    os.replace(part, path)
    return best, {**record, "by": "measured", "cache": str(path)}
