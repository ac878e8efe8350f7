"""Stage 6, report: what a packed output holds and whether it is right.

`stats` (pack similarity, fill, near-duplicates), `verify` (every shard checked against the manifest and the
inputs), `inspection` (one pack shown turn by turn), `sweep` (stats over several thresholds), `plots`.
"""
