"""What `tfpack pack` asks of the walk beyond `OrderConfig`: rows left out, near-duplicates removed, earlier epochs'
packs avoided."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from tfpack.config import OrderConfig
from tfpack.ordering.dedup import Duplicates, near_duplicates
from tfpack.ordering.walk import WalkResult, walk


class WalkPlan(NamedTuple):
    """What `tfpack pack` asks of the walk beyond `OrderConfig`: rows to leave out, near-duplicates to remove
    (`dedup`: cosine S; `rank`: the lowest of a group stays), and earlier epochs' packs to avoid (see walk.py)."""

    skip: NDArray[np.bool_] | None = None
    dedup: float | None = None
    rank: NDArray[np.int64] | None = None
    avoid: NDArray[np.int64] | None = None
    reach: int = 0
    epoch: int = 0  # added to the walk's seed

    def removing(self, duplicates: Duplicates | None, n: int) -> NDArray[np.bool_]:
        """The rows the walk skips: `skip` plus the removed near-duplicates."""
        skip = np.zeros(n, dtype=np.bool_) if self.skip is None else self.skip.copy()
        if duplicates is not None:
            skip[duplicates.removed] = True
        return skip

    def find_duplicates(
        self, vectors: NDArray[Any], nbr_ids: NDArray[Any], nbr_sims: NDArray[Any]
    ) -> Duplicates | None:
        """The near-duplicates on this kNN graph, or None without `dedup`."""
        if self.dedup is None:
            return None
        rank = np.arange(len(vectors)) if self.rank is None else self.rank
        return near_duplicates(vectors, nbr_ids, nbr_sims, self.dedup, rank, self.skip)

    def walk(
        self,
        vectors: NDArray[Any],
        nbr_ids: NDArray[Any],
        nbr_sims: NDArray[Any],
        reject_d2: float,
        cfg: OrderConfig,
        start: int,
        duplicates: Duplicates | None,
    ) -> WalkResult:
        """The TFP walk of `cfg` from `start` under this plan (`duplicates`: those `find_duplicates` removed)."""
        return walk(
            vectors,
            nbr_ids,
            nbr_sims,
            reject_d2,
            window=cfg.window,
            start=start,
            exact=cfg.exact,
            n_random=cfg.n_random,
            seed=cfg.seed + self.epoch,
            hops=cfg.hops,
            skip=self.removing(duplicates, len(vectors)),
            avoid=self.avoid,
            reach=self.reach,
        )

    def rows(self, members: NDArray[np.int64]) -> WalkPlan:
        """The plan for a subset of rows (one bucket)."""
        return WalkPlan(
            None if self.skip is None else self.skip[members],
            self.dedup,
            None if self.rank is None else self.rank[members],
            None if self.avoid is None else self.avoid[:, members],
            self.reach,
            self.epoch,
        )


WALK_ALL = WalkPlan()  # every row walked, nothing avoided: `tfpack order`
