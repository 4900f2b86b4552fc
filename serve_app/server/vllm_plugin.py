"""serve_app's vLLM general plugin (entry point `vllm.general_plugins`), which vLLM calls in every process it
starts. In the engine processes a serve_app model server spawned (and only there): arm the parent-death signal
(engine_guard.py), then apply the engine-side vLLM patches (vllm_patches/). A patch that no longer matches the
installed vLLM raises here, so the engine fails at start with the patch's name instead of serving unpatched.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register() -> None:
    from serve_app.server.engine_guard import register as arm_engine_guard

    if not arm_engine_guard():
        return  # not one of serve_app's engine processes (a bare `vllm serve`, the replica itself, a repeat call)
    from serve_app.server.vllm_patches import apply_engine_patches

    applied = apply_engine_patches()
    logger.info("serve_app vLLM patches applied in engine process: %s", ", ".join(applied) or "none")
