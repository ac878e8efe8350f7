"""tfpack: Threshold Filtering Packing (Dong et al., NAACL 2025) for SFT datasets, at scale."""

from tfpack.version import __version__

__all__ = ["__version__"]
