"""Stage 3, ordering: the TFP path, a greedy nearest-neighbour walk that skips samples too similar to the last few.

`threshold` turns `--threshold` into a squared-distance ceiling (the paper's quantile estimate for 'auto'); `knn`
builds or loads the candidate graph; `walk` is the numba traversal; `buckets` splits a large set into clusters
walked in parallel; `stage` is `tfpack order`.
"""
