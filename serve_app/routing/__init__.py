"""Prefix-cache-aware routing between a model's replicas.

`prefix_affinity` is the pure decision (prompt text, block hashes, the prefix index, the choice); `ray_router`
wraps it as a Ray Serve request router. Importing this package imports neither.
"""
