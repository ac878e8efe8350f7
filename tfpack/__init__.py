"""tfpack: Threshold Filtering Packing (Dong et al., NAACL 2025) for SFT datasets, at scale."""

__version__ = "0.1.0"
