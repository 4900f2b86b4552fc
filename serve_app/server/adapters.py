"""LoRA adapters of one model server: loaded into the engine on first use, kept in a bounded per-replica cache.

The cache is Ray Serve's model multiplexing (`serve.multiplexed`): a per-replica LRU of `max_loaded_adapters`
that also tells Ray's routers which replica holds which adapter, so a request for an adapter (sent with
`multiplexed_model_id`) goes to a replica that already has it. Loading registers the adapter with vLLM's OpenAI
layer (requests then name it as `model`); eviction unregisters it and frees its weights in the engine.
"""

from __future__ import annotations

import logging
from typing import Any

from serve_app.api.errors import ServeAppError
from serve_app.config import AdapterConfig

logger = logging.getLogger("ray.serve")


class AdapterCache:
    def __init__(self, adapters: list[AdapterConfig], max_loaded: int):
        self._paths = {adapter.name: adapter.path for adapter in adapters}
        self._max_loaded = max_loaded
        self._state: Any = None
        self._cached_load = None

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def bind(self, state: Any) -> None:
        """Attach vLLM's app state (its `openai_serving_models` and `engine_client`) once it is built."""
        from ray import serve

        self._state = state

        async def load_adapter(name: str) -> _LoadedAdapter:  # a plain function: Ray keeps its LRU on it
            return await self._load(name)

        self._cached_load = serve.multiplexed(max_num_models_per_replica=self._max_loaded)(load_adapter)

    async def ensure_loaded(self, name: str) -> None:
        """Load `name` unless this replica holds it (the least recently used one is unloaded past the bound)."""
        await self._cached_load(name)

    async def _load(self, name: str) -> "_LoadedAdapter":
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        models = self._state.openai_serving_models
        result = await models.load_lora_adapter(LoadLoRAAdapterRequest(lora_name=name, lora_path=self._paths[name]))
        if not isinstance(result, str):  # vLLM's ErrorResponse: a bad path or checkpoint
            error = result.error
            logger.warning("Adapter %s failed to load: %s", name, error.message)
            raise ServeAppError(f"The adapter '{name}' could not be loaded: {error.message}", status_code=500,
                                type="server_error", code="adapter_unavailable")
        logger.info("Adapter %s loaded from %s", name, self._paths[name])
        return _LoadedAdapter(self, name, models.lora_requests[name].lora_int_id)

    async def _unload(self, name: str, lora_int_id: int) -> None:
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        try:  # the engine may already be shutting down with the replica
            result = await self._state.openai_serving_models.unload_lora_adapter(
                UnloadLoRAAdapterRequest(lora_name=name))
            if not isinstance(result, str):  # vLLM's ErrorResponse: it did not hold the name; the engine may
                logger.warning("Adapter %s was not registered at unload: %s", name, result.error.message)
            await self._state.engine_client.remove_lora(lora_int_id)
            logger.info("Adapter %s unloaded", name)
        except Exception as exc:  # noqa: BLE001
            logger.warning("Adapter %s unload failed: %s", name, type(exc).__name__)


class _LoadedAdapter:
    """What Ray's LRU holds; Ray awaits the instance's `__del__` when it evicts the adapter."""

    def __init__(self, cache: AdapterCache, name: str, lora_int_id: int):
        self.name = name

        async def unload(*_: Any) -> None:
            await cache._unload(name, lora_int_id)

        # Per instance (not a class-level async __del__, which Python's garbage collector would also call).
        self.__del__ = unload
