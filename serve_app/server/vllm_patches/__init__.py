"""Patches of vLLM, one module each, applied only in the process where the patched code runs.

Each patch module declares:
- `UPSTREAM`: the upstream issue / pull request / version it covers;
- `VLLM_VERSIONS`: the vLLM releases it was written against;
- `PROCESSES`: where its code runs: "engine" (vLLM's engine core and worker processes: sampler, model runner,
  LoRA ops) and/or "frontend" (the model server replica that builds the AsyncLLM: request validation);
- `check()`: raises `VllmPatchMismatch` when the installed vLLM no longer has the code the patch expects (then
  the patch is stale: delete it, or port it), so a replica fails loudly at start instead of serving unpatched;
- `apply(process)`: patches what runs in `process`; idempotent; returns whether anything was patched.

Engine patches run from the `vllm.general_plugins` entry point (`serve_app.server.vllm_plugin:register`), which
vLLM calls in every process it starts; they apply only in engine processes spawned by a serve_app model server
(engine_guard.py decides), never in a bare `vllm serve` on the same machine. Frontend patches are applied by the
model server itself before it builds its engine (`apply_frontend_patches`), after `check_all()`.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Callable

PATCH_MODULES = (
    "cpu_spec_decode_expand",
    "spec_decode_empty_top_k",
    "spec_decode_min_p_logit_bias",
    "ngram_draft_governor",  # after the min_p patch: it wraps the same method, around that patch's wrapper
    "no_draft_plain_sampler",
    "greedy_n",
    "lora_cpu_no_adapter",
)


class VllmPatchMismatch(RuntimeError):
    """The installed vLLM is not the one a patch was written for."""


def installed_vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "unknown")


def require(patch: str, versions: tuple[str, ...], target: Callable[..., Any] | type, *snippets: str) -> None:
    """Raise VllmPatchMismatch unless vLLM is one of `versions` and `target`'s source holds every snippet."""
    version = installed_vllm_version()
    if version not in versions:
        raise VllmPatchMismatch(
            f"serve_app's vLLM patch {patch!r} was written for vLLM {', '.join(versions)}; vLLM {version} is "
            "installed. Check whether upstream fixed it (see the module's UPSTREAM) and delete or port the patch.")
    source = inspect.getsource(inspect.unwrap(target))  # the original, also once patched
    missing = [snippet for snippet in snippets if snippet not in source]
    if missing:
        raise VllmPatchMismatch(
            f"serve_app's vLLM patch {patch!r}: {target.__module__}.{target.__qualname__} no longer contains "
            f"{missing[0]!r}; the patch does not match the installed vLLM {version}.")


def is_ngram(speculative_config: Any) -> bool:
    """Whether vLLM's speculative config (None: speculation off) is n-gram prompt lookup (serve_app's `auto`,
    `ngram`): the method several patches cover."""
    return getattr(speculative_config, "method", None) == "ngram"


def is_patched(function: Callable[..., Any]) -> bool:
    """Whether `function` is already one of serve_app's replacements (apply() is idempotent)."""
    return getattr(function, "_serve_app_patched", False)


def install(replacement: Callable[..., Any], original: Callable[..., Any], *owners: Any) -> None:
    """Put `replacement` in place of `original` under its own name on each owner (module or class) that has it,
    marked as serve_app's (`is_patched`) and wrapping the original (`inspect.unwrap`, the version gate)."""
    replacement._serve_app_patched = True
    replacement.__wrapped__ = original
    for owner in owners:
        if hasattr(owner, replacement.__name__):
            setattr(owner, replacement.__name__, replacement)


def patch_modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in PATCH_MODULES]


def check_all() -> None:
    """Every patch's version gate (raises VllmPatchMismatch naming the first that fails)."""
    for module in patch_modules():
        module.check()


def apply_engine_patches() -> list[str]:
    """Apply every engine-process patch (called in vLLM's engine core / worker processes). Returns their names."""
    applied = []
    for module in patch_modules():
        if "engine" in module.PROCESSES:
            module.check()
            if module.apply("engine"):
                applied.append(module.__name__.rsplit(".", 1)[-1])
    return applied


def apply_frontend_patches() -> list[str]:
    """Check every patch and apply the frontend-process ones (the model server calls this before it builds its
    engine, so a stale patch stops the replica at start with the patch's name)."""
    applied = []
    for module in patch_modules():
        module.check()
        if "frontend" in module.PROCESSES:
            if module.apply("frontend"):
                applied.append(module.__name__.rsplit(".", 1)[-1])
    return applied
