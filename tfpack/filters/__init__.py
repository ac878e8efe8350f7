"""Stage 4, filters: the samples `pack` leaves out before ordering, each listed in dropped.jsonl with its reason.

`contamination` finds training samples that copy or paraphrase benchmark items (`--decontaminate`); `dedup` finds
near-duplicates (`--dedup`); `stage` runs both over an embed run (`filter_samples`, the one removal function behind
`pack`, `sweep` and the API). Both find their pairs on the ordering stage's kNN search.
"""
