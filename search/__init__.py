"""The search engine: gallery arrays, FAISS recall, encode -> recall -> rerank, and evaluation.

Used by the CLI, the evaluator, the benchmarks and the service: one code path for search.
"""
