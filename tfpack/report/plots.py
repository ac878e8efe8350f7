"""`tfpack stats --plot FILE.png`: fill and relatedness distributions of a pack output (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.errors import DependencyError
from tfpack.workdir import atomic_path


def plot_pack_stats(
    path: Path,
    fills: NDArray[np.floating[Any]],
    tfp_sims: NDArray[np.float64],
    random_sims: NDArray[np.float64],
    summary: dict[str, Any],
) -> None:
    """Two panels: per-pack fill rate; per-pack mean pairwise similarity, TFP packs against random packs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DependencyError("--plot needs matplotlib; run `pip install matplotlib` (or tfpack[plot])") from e
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    left.hist(fills, bins=np.linspace(0, 1, 41), color="#4c72b0")
    left.axvline(summary["fill_rate"], color="black", linestyle="--", label=f"fill rate {summary['fill_rate']:.3f}")
    left.set(
        xlabel="tokens / max_len per pack",
        ylabel="packs",
        title=f"Pack fill ({summary['packs']} packs, max_len {summary['max_len']})",
    )
    left.legend(loc="upper left")
    tfp, rnd = tfp_sims[np.isfinite(tfp_sims)], random_sims[np.isfinite(random_sims)]
    lo = float(min(tfp.min(initial=0), rnd.min(initial=0)))
    bins = np.linspace(lo, 1, 41)
    right.hist(rnd, bins=bins, alpha=0.6, color="#999999", label=f"random packs (mean {rnd.mean():.3f})")
    right.hist(tfp, bins=bins, alpha=0.6, color="#dd8452", label=f"TFP packs (mean {tfp.mean():.3f})")
    if summary.get("threshold") is not None:
        right.axvline(summary["threshold"], color="black", linestyle=":", label=f"threshold {summary['threshold']:.3f}")
    right.set(xlabel="mean pairwise cosine similarity inside a pack", ylabel="packs", title="Relatedness")
    right.legend(loc="upper left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
