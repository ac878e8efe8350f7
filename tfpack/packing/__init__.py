"""Stage 5, packing: conversations rendered and tokenized for the user's model, cut along the path into packs.

`tokenizer` renders with the chat template (`templates/` holds the built-in ones) and locates the trained spans;
`tokenstore` keeps the token ids on disk; `packer` fills packs of at most `max_len` tokens; `shards` writes the
Parquet rows; `card` writes the dataset card and the Megatron-Bridge metadata; `stage` holds the tokenize step and
the shard writer (tfpack.pipeline runs the job).
"""
