"""What crosses a seam between the ingress and a model server: the request, what comes back, engine stats.

Pure (standard library only; no vLLM, no torch, no Ray): the ingress, both backends and every model server
(vLLM or simulated) import these types, and Ray pickles them between processes.

    ingress --ServerRequest--> model server --WholeResponse | Frame...--> ingress (relay) --> client
                                             \\--EngineStats (stats(), health, /metrics)
    model server --RequestOutcome (on the done frame, on a whole answer)--> relay --> accounting, tenancy's
        observer, stage metrics and spans (counted by the engine, timed by serve_app/server/timings.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # Placement separate: the sending ingress replica and its share of the model's load that waits at it or was
    # refused there (serve_app/autoscaling/ingress_demand.py), for the model replica's autoscaling report.
    ingress_id: str | None = None
    ingress_demand: float = 0.0


@dataclass(slots=True)
class WholeResponse:
    """A non-streamed answer or an error before the first byte."""

    status_code: int
    body: dict[str, Any]
    replica: str | None = None  # the model server replica that answered (the x-serve-app-replica header)
    headers: dict[str, str] | None = None  # extra response headers (an error's Retry-After)
    outcome: "RequestOutcome | None" = None  # a served answer's counts and timings (None on errors)

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
    outcome: "RequestOutcome | None" = None  # on the done marker of a stream that finished


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """How one served request ended, as its model server counted and timed it.

    Attached by the model server to a stream's done marker and to a whole answer; the relay feeds it to the
    accounting (prompt and output tokens), tenancy's observer (TTFT, decode time) and the stage metrics.
    """

    num_prompt_tokens: int | None  # the rendered prompt's tokens (None: the engine did not say)
    num_output_tokens: int  # every choice's generated tokens
    timings_ms: dict[str, float]  # the response's `timings` (serve_app/server/timings.py), arrival-based

    @property
    def ttft_s(self) -> float | None:
        """Arrival at the ingress -> first token (None: no token came)."""
        ttft_ms = self.timings_ms.get("ttft_ms")
        return None if ttft_ms is None else ttft_ms / 1000.0

    @property
    def decode_s(self) -> float:
        """First token -> last token."""
        return self.timings_ms.get("decode_ms", 0.0) / 1000.0

    @classmethod
    def of_usage(cls, usage: dict[str, Any] | None, timings_ms: dict[str, float]) -> "RequestOutcome":
        """From an OpenAI `usage` object (chat/completions or Responses names)."""
        usage = usage or {}
        return cls(num_prompt_tokens=usage_count(usage, "prompt_tokens", "input_tokens") or None,
                   num_output_tokens=usage_count(usage, "completion_tokens", "output_tokens"), timings_ms=timings_ms)


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
