"""What crosses a seam between the ingress and a model server: the request, what comes back, engine stats.

Pure (standard library only; no vLLM, no torch, no Ray): the ingress, both backends and every model server
(vLLM or simulated) import these types, and Ray pickles them between processes.

    ingress --ServerRequest--> model server --WholeResponse | Frame...--> ingress (relay) --> client
                                             \\--EngineStats (stats(), health, /metrics)
    relay --RequestOutcome--> tenancy's observer (tokens, TTFT, decode time of a finished request)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

WireFormat = Literal["sse", "msgpack"]


@dataclass(slots=True)
class ServerRequest:
    """One request as the ingress hands it to a model server.

    `body` is the client's decoded JSON object after the ingress's cheap checks (size, depth, limits, roles,
    model); the model server validates it into vLLM's request type and answers a bad one with a WholeResponse.
    """

    endpoint: str  # a key of serve_app.api.endpoints.ENDPOINTS
    body: dict[str, Any]
    request_id: str
    wire: WireFormat = "sse"
    handoff_time_s: float = 0.0  # time.time() when the ingress called the model server (0: unknown)
    timings_ms: dict[str, float] = field(default_factory=dict)  # the ingress's stages (serve_app/server/timings.py)
    priority: int | None = None  # vLLM's scheduling priority (tenancy); None leaves the body's own


@dataclass(slots=True)
class WholeResponse:
    """A non-streamed answer or an error before the first byte."""

    status_code: int
    body: dict[str, Any]
    replica: str | None = None  # the model server replica that answered (the x-serve-app-replica header)
    headers: dict[str, str] | None = None  # extra response headers (an error's Retry-After)

    @classmethod
    def from_error(cls, error: Any) -> "WholeResponse":
        """A ServeAppError (serve_app/api/errors.py) as an answer: its status, body and headers."""
        return cls(error.status_code, error.to_body(), headers=dict(error.headers) or None)


@dataclass(slots=True)
class Frame:
    """One message from the model server to the client's connection (already encoded for the wire)."""

    data: str | bytes
    num_tokens: int = 0  # engine tokens produced since the previous frame
    has_output: bool = False  # carries generated text or a tool-call delta
    is_final: bool = False  # the done marker: nothing follows
    error: dict[str, Any] | None = None
    timings: dict[str, float] | None = None  # on the done marker: the request's `timings` (for the ingress's metrics)
    num_prompt_tokens: int | None = None  # on the done marker: the rendered prompt's tokens (tenancy's accounting)


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """How one admitted request ended, as the relay saw it (what tenancy's predictor and estimator learn from)."""

    status_code: int
    num_prompt_tokens: int  # counted by the model server when it said so, else the ingress's estimate
    num_output_tokens: int
    ttft_s: float | None  # arrival at the ingress -> first token (None: no token came)
    decode_s: float  # first token -> last token

    @property
    def is_ok(self) -> bool:
        return self.status_code == 200 and self.ttft_s is not None

    @classmethod
    def of_whole(cls, whole: WholeResponse, estimated_prompt_tokens: int) -> "RequestOutcome":
        """A whole response's outcome, from its usage and serve_app's `timings` (the engine's first token)."""
        usage = whole.body.get("usage") or {}
        timings_ms = whole.body.get("timings") or {}
        ttft_ms = timings_ms.get("ttft_ms")
        return cls(status_code=whole.status_code,
                   num_prompt_tokens=usage_count(usage, "prompt_tokens", "input_tokens") or estimated_prompt_tokens,
                   num_output_tokens=usage_count(usage, "completion_tokens", "output_tokens"),
                   ttft_s=None if ttft_ms is None else ttft_ms / 1000.0,
                   decode_s=timings_ms.get("decode_ms", 0.0) / 1000.0)


def usage_count(usage: dict[str, Any], *names: str) -> int:
    """The first of `names` that `usage` counts (chat/completions and Responses name them differently)."""
    return next((int(usage[name]) for name in names if usage.get(name)), 0)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """One model server's engine load and counters at a moment (totals since its start for the counters)."""

    num_running: int = 0
    num_waiting: int = 0
    num_unfinished: int = 0
    num_active_streams: int = 0
    is_healthy: bool = True
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0

    @classmethod
    def of(cls, stats: "EngineStats | dict[str, Any]") -> "EngineStats":
        """From a model server's `engine_stats()`: already typed, or its dict form (unknown keys ignored)."""
        if isinstance(stats, EngineStats):
            return stats
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in stats.items() if k in known}
        if "is_healthy" in values:
            values["is_healthy"] = bool(values["is_healthy"])
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}
