"""Stage 1, ingest: input files (JSONL, JSON, Parquet, stdin) to conversations in `samples.parquet`.

`readers` reads records and locates each one (file, line or row); `formats` maps a record of any supported dataset
format to a `Conversation`; `samples` writes and reads the run directory's sample table.
"""
