"""tfpack: Threshold Filtering Packing (Dong et al., NAACL 2025) for SFT datasets, at scale.

The stages, in order: `tfpack.ingest` (inputs to conversations), `tfpack.embedding`, `tfpack.ordering` (the TFP path),
`tfpack.packing` (tokenized packs in Parquet shards), `tfpack.report` (stats and verification). The functions below
are the commands as a Python API (`tfpack.api`); `tfpack.data` reads the shards in a training loop.
"""

from tfpack.api import (
    EmbedResult,
    OrderResult,
    PackResult,
    VerifyResult,
    embed,
    order,
    pack,
    pack_dataset,
    stats,
    verify,
)
from tfpack.config import EmbedConfig, OrderConfig, PackConfig
from tfpack.errors import TfpackError
from tfpack.version import __version__

__all__ = [
    "EmbedConfig",
    "EmbedResult",
    "OrderConfig",
    "OrderResult",
    "PackConfig",
    "PackResult",
    "TfpackError",
    "VerifyResult",
    "__version__",
    "embed",
    "order",
    "pack",
    "pack_dataset",
    "stats",
    "verify",
]
