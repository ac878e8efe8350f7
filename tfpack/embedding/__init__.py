"""Stage 2, embedding: one unit vector per sample (`embeddings.npy`), from a sentence-transformers model.

`models` resolves the model and device and keeps the cache of ONNX exports; `encoders` loads and runs a backend
(torch, ONNX Runtime, OpenVINO); `stage` is `tfpack embed`: ingest, embed chunk by chunk, resume, manifest.
"""
