"""What every benchmark script prints or loads the same way: the CPU line quoted beside each figure, and the test
template gallery. Scripts import it as a sibling (`python scripts/NAME.py` puts scripts/ on sys.path)."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIMD = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def cpu_line() -> str:
    """lscpu's model name, the core count, the SIMD flags that move the figures, and whether bf16 is native.

    >>> cpu_line()  # doctest: +SKIP
    'AMD EPYC, 2 cores, avx2 avx512f avx512_vnni avx512_bf16 (bf16)'
    """
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    simd = [f for f in SIMD if f in flags]
    bf16 = "bf16" if {"avx512_bf16", "amx_bf16"} & flags else "no bf16"
    model = fields.get("Model name", platform.processor() or "?").strip()
    return f"{model}, {os.cpu_count()} cores, {' '.join(simd) or 'no avx2'} ({bf16})"


def load_gallery() -> Any:
    """tests/packing/templates.py of this checkout, by path (tfpack itself may come from another one)."""
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "tests" / "packing" / "templates.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
