"""`tfpack stats RUN_DIR --dedup S`: what `pack --dedup S` would remove, on the same cached kNN graph, with a few
groups shown so S can be judged by eye."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tfpack.config import OrderConfig
from tfpack.ingest.formats import prompt_text
from tfpack.ingest.samples import as_turns
from tfpack.ordering.dedup import near_duplicates
from tfpack.ordering.knn import cached_knn
from tfpack.ordering.stage import load_embeddings, to_float32, unit_rows_in_place
from tfpack.workdir import KNN_DIR, SAMPLES_FILE, fingerprint_file

SHOWN_CHARS = 160


def dedup_stats(run_dir: Path, min_cos: float, show: int = 0, cfg: OrderConfig | None = None) -> dict[str, Any]:
    """Near-duplicate groups of an embed run at cosine `min_cos` (first sample of each group kept) on the kNN graph
    `cfg` asks for (`pack`'s default one when None): how many samples would go, the group-size histogram, and the
    `show` largest groups with their prompts and cosines."""
    cfg = cfg or OrderConfig()
    emb, emb_file, _ = load_embeddings(run_dir)
    vectors = to_float32(emb)
    unit_rows_in_place(vectors)
    k = min(cfg.k, len(vectors) - 1)
    method = "exact" if cfg.exact else cfg.knn
    nbr_ids, nbr_sims, _, _ = cached_knn(
        run_dir / KNN_DIR, fingerprint_file(emb_file), vectors, k, method, cfg.nprobe, cfg.seed
    )
    found = near_duplicates(vectors, nbr_ids, nbr_sims, min_cos, np.arange(len(vectors)))
    sizes = Counter(found.group_sizes().tolist())
    summary: dict[str, Any] = {
        "n": len(vectors),
        "dedup": min_cos,
        "removed": len(found.removed),
        "removed_rate": round(len(found.removed) / len(vectors), 6),
        "groups": int(sum(sizes.values())),
        "group_sizes": {str(size): count for size, count in sorted(sizes.items())},
    }
    if show > 0:
        keepers = Counter(found.kept_as[found.removed].tolist())
        table = pq.read_table(run_dir / SAMPLES_FILE, columns=["sample_id", "turns"])
        ids, turns = table.column("sample_id"), table.column("turns")

        def text(row: int) -> str:
            prompt = " ".join(prompt_text(as_turns(turns[row].as_py())).split())
            return prompt if len(prompt) <= SHOWN_CHARS else prompt[: SHOWN_CHARS - 1] + "…"

        summary["shown"] = [
            {
                "kept": {"sample_id": ids[kept].as_py(), "prompt": text(kept)},
                "removed": [
                    {"sample_id": ids[row].as_py(), "cos": round(float(found.cosine[row]), 4), "prompt": text(int(row))}
                    for row in np.flatnonzero(found.kept_as == kept)
                ],
            }
            for kept, _ in keepers.most_common(show)
        ]
    return summary
