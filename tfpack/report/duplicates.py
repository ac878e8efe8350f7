"""`tfpack stats RUN_DIR --dedup S`: what `pack --dedup S` would remove (the same function, `filters.dedup.dedup_run`,
with the same --dedup-keep and --dedup-on), with a few groups shown so S can be judged by eye."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tfpack.config import OrderConfig
from tfpack.filters.dedup import dedup_run
from tfpack.ingest.formats import prompt_text
from tfpack.ingest.samples import as_turns
from tfpack.ordering.stage import load_embeddings
from tfpack.workdir import SAMPLES_FILE, fingerprint_file, read_manifest, rerun_embed

SHOWN_CHARS = 160


def dedup_stats(
    run_dir: Path, min_cos: float, keep: str, on: str, show: int = 0, cfg: OrderConfig | None = None
) -> dict[str, Any]:
    """The near-duplicates `pack --dedup min_cos --dedup-keep keep --dedup-on on` would remove from an embed run, on
    the kNN graph `cfg` asks for (`pack`'s default when None): how many, what was compared, the group-size histogram,
    and the `show` largest groups (a kept sample and those removed in its name) with their prompts and cosines.
    Equal to what `pack` removes when no sample is left out for another reason (too long, refused, contaminated)."""
    emb, emb_file, _ = load_embeddings(run_dir)
    manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
    found = dedup_run(
        run_dir,
        manifest,
        emb,
        fingerprint_file(emb_file),
        min_cos,
        keep,
        on,
        cfg or OrderConfig(),
    )
    removed = found.duplicates.removed
    sizes = Counter(found.duplicates.group_sizes().tolist())
    summary: dict[str, Any] = {
        "n": len(emb),
        "dedup": min_cos,
        **{key: value for key, value in found.summary.items() if key != "min_cos"},
        "removed": len(removed),
        "removed_rate": round(len(removed) / len(emb), 6),
        "groups": int(sum(sizes.values())),
        "group_sizes": {str(size): count for size, count in sorted(sizes.items())},
    }
    if show > 0:
        kept_as, cosine = found.duplicates
        keepers = Counter(kept_as[removed].tolist())
        table = pq.read_table(run_dir / SAMPLES_FILE, columns=["sample_id", "turns"])
        ids, turns = table.column("sample_id"), table.column("turns")

        def text(row: int) -> str:
            prompt = " ".join(prompt_text(as_turns(turns[row].as_py())).split())
            return prompt if len(prompt) <= SHOWN_CHARS else prompt[: SHOWN_CHARS - 1] + "…"

        summary["shown"] = [
            {
                "kept": {"sample_id": ids[kept].as_py(), "prompt": text(kept)},
                "removed": [
                    {"sample_id": ids[row].as_py(), "cos": round(float(cosine[row]), 4), "prompt": text(int(row))}
                    for row in np.flatnonzero(kept_as == kept)
                ],
            }
            for kept, _ in keepers.most_common(show)
        ]
    return summary
