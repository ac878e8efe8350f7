"""What `tfpack pack` asks of the walk beyond `OrderConfig`: rows left out (near-duplicates among them), earlier
epochs' packs avoided."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from tfpack.config import OrderConfig
from tfpack.ordering.walk import WalkResult, walk


class WalkPlan(NamedTuple):
    """What `tfpack pack` asks of the walk beyond `OrderConfig`: rows to leave out and earlier epochs' packs to
    avoid (see walk.py)."""

    skip: NDArray[np.bool_] | None = None
    avoid: NDArray[np.int64] | None = None
    reach: int = 0
    epoch: int = 0  # added to the walk's seed

    def walk(
        self,
        vectors: NDArray[Any],
        nbr_ids: NDArray[Any],
        nbr_sims: NDArray[Any],
        reject_d2: float,
        cfg: OrderConfig,
        start: int,
        gram: NDArray[np.float32] | None = None,
    ) -> WalkResult:
        """The TFP walk of `cfg` from `start` under this plan (`gram`: see `walk`)."""
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
            skip=self.skip,
            avoid=self.avoid,
            reach=self.reach,
            gram=gram,
        )

    def rows(self, members: NDArray[np.int64]) -> WalkPlan:
        """The plan for a subset of rows (one bucket)."""
        return WalkPlan(
            None if self.skip is None else self.skip[members],
            None if self.avoid is None else self.avoid[:, members],
            self.reach,
            self.epoch,
        )


WALK_ALL = WalkPlan()  # every row walked, nothing avoided: `tfpack order`
