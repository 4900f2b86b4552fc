"""The engine seam: config in, a model server out.

Every model server fills the same contract (`serve_app/server/model_server.py`'s docstring): `await start()`,
`generate(ServerRequest)` yielding one `WholeResponse` or a stream of `Frame`s, `engine_stats()`,
`autoscaling_stats()`, `check_health()`, `shutdown()`. `engine.backend` picks the implementation; the ingress,
admission, tenancy, routing, metrics and autoscaling hooks do not know which one they talk to.
"""

from __future__ import annotations

from typing import Any

from serve_app.config import AppConfig


def build_model_server(config: AppConfig) -> Any:
    """A model server for `config` (one model's view). Imported lazily: the simulated engine loads no vLLM."""
    if config.engine.backend == "simulated":
        from serve_app.server.simulated.server import SimulatedModelServer

        return SimulatedModelServer(config)
    from serve_app.server.model_server import ModelServer

    return ModelServer(config)
