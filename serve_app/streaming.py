"""Streaming response node: token-id deltas in, client-ready frames out.

Per request it runs incremental detokenization, stop strings, finish reason and usage counting, and
frames the result as SSE or msgpack, so the ingress only relays bytes. The first text goes out as soon
as it exists; when the model replica gets ahead of this node, the engine merges steps and one frame
carries several tokens.

`ResponseState` is the pure per-request logic; `ResponseStreamer` drives it from a model handle (used
as its own deployment, `StreamingDeployment`, or inline in the ingress).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ray import serve

from serve_app.config import AppConfig
from serve_app.detokenizer import IncrementalDetokenizer
from serve_app.errors import ServeAppError, find_serve_app_error
from serve_app.framing import ChunkBuilder, WireFormat, done_marker, encode
from serve_app.models import resolve_model_path
from serve_app.protocol import GenerationRequest, TokenChunk
from serve_app.stop_strings import StopStringMatcher

logger = logging.getLogger("ray.serve")


@dataclass(slots=True)
class StreamFrame:
    """One message to the ingress: bytes for the client plus what the ingress needs for metrics."""

    data: str | bytes
    num_tokens: int = 0
    is_first_text: bool = False
    # Set on the last frame of a response.
    finish_reason: str | None = None
    timings_ms: dict[str, float] | None = None
    error: str | None = None


class ResponseState:
    """Pure per-request state: detokenizer + stop strings + counts."""

    def __init__(self, tokenizer, request: GenerationRequest):
        self.detokenizer = IncrementalDetokenizer(tokenizer, request.prompt_ids)
        self.stops = StopStringMatcher(request.stop)
        self.num_prompt_tokens = len(request.prompt_ids)
        self.num_completion_tokens = 0
        self.finish_reason: str | None = None

    def on_chunk(self, chunk: TokenChunk) -> str:
        """Consume a chunk; return the text that may be sent. Sets `finish_reason` when the response ends."""
        self.num_completion_tokens += len(chunk.token_ids)
        text = self.detokenizer.push(chunk.token_ids)
        if chunk.finish_reason:
            text += self.detokenizer.flush()
        text = self.stops.push(text)
        if self.stops.stopped:
            self.finish_reason = "stop"
        elif chunk.finish_reason:
            text += self.stops.flush()
            self.finish_reason = chunk.finish_reason
        return text


@dataclass
class _Clock:
    arrival_s: float
    first_chunk_s: float | None = None
    last_chunk_s: float | None = None
    node_busy_s: float = 0.0
    engine_ms: dict[str, float] = field(default_factory=dict)

    def on_chunk(self, chunk: TokenChunk) -> float:
        """Note a chunk's arrival (the first one also brings the engine's queue and prefill times)."""
        received_s = time.time()
        if self.first_chunk_s is None:
            self.first_chunk_s = received_s
            self.engine_ms = _engine_phases(chunk)
        self.last_chunk_s = received_s
        return received_s

    def timings(self, request: GenerationRequest) -> dict[str, float]:
        timings = dict(request.timings_ms)
        timings.update(self.engine_ms)
        if self.first_chunk_s is not None:
            timings["ttft_ms"] = (self.first_chunk_s - self.arrival_s) * 1000.0
            timings["decode_ms"] = (self.last_chunk_s - self.first_chunk_s) * 1000.0
        timings["stream_ms"] = self.node_busy_s * 1000.0
        return timings


class ResponseStreamer:
    def __init__(self, tokenizer, model_handle):
        self._tokenizer = tokenizer
        self._model = model_handle

    def _open(self, request: GenerationRequest):
        return self._model.options(stream=True).generate.remote(request)

    async def stream(self, request: GenerationRequest, wire: WireFormat = "sse") -> AsyncIterator[StreamFrame]:
        """Frames of one streamed response. Errors after the first frame become a final error event."""
        builder = ChunkBuilder(request.request_id, request.model_name, request.created_s, request.endpoint)
        state = ResponseState(self._tokenizer, request)
        clock = _Clock(arrival_s=request.arrival_time_s)
        sent_text = False
        upstream = self._open(request)
        try:
            async for chunk in upstream:
                received_s = clock.on_chunk(chunk)
                text = state.on_chunk(chunk)
                parts: list[Any] = []
                is_first = bool(text) and not sent_text
                if text or state.finish_reason:
                    parts.append(builder.text(text, first=not sent_text, finish_reason=state.finish_reason))
                    sent_text = sent_text or bool(text)
                if state.finish_reason:
                    timings = clock.timings(request)
                    if request.include_usage:
                        parts.append(builder.usage(state.num_prompt_tokens, state.num_completion_tokens, timings))
                    clock.node_busy_s += time.time() - received_s
                    yield StreamFrame(
                        _join([encode(p, wire) for p in parts] + [done_marker(wire)]),
                        num_tokens=len(chunk.token_ids),
                        is_first_text=is_first,
                        finish_reason=state.finish_reason,
                        timings_ms=timings,
                    )
                    return
                if parts:
                    data = encode(parts[0], wire)
                    clock.node_busy_s += time.time() - received_s
                    yield StreamFrame(data, num_tokens=len(chunk.token_ids), is_first_text=is_first)
            raise RuntimeError("model stream ended without a finish reason")
        except Exception as exc:
            error = find_serve_app_error(exc)
            if error is not None and not sent_text:
                raise error  # nothing sent yet: the ingress answers with the right status code
            logger.warning("Stream %s failed: %s", request.request_id, type(exc).__name__)
            message = error.message if error else f"generation failed: {type(exc).__name__}"
            yield StreamFrame(
                _join([encode(builder.error(message), wire), done_marker(wire)]),
                finish_reason="error",
                error=message,
            )
        finally:
            upstream.cancel()

    async def complete(self, request: GenerationRequest) -> dict[str, Any]:
        """A whole (non-streamed) response body."""
        builder = ChunkBuilder(request.request_id, request.model_name, request.created_s, request.endpoint)
        state = ResponseState(self._tokenizer, request)
        clock = _Clock(arrival_s=request.arrival_time_s)
        pieces: list[str] = []
        upstream = self._open(request)
        try:
            async for chunk in upstream:
                clock.on_chunk(chunk)
                pieces.append(state.on_chunk(chunk))
                if state.finish_reason:
                    break
        finally:
            upstream.cancel()
        if state.finish_reason is None:
            raise ServeAppError("model stream ended without a finish reason", status_code=500, type="server_error")
        return builder.full_response(
            "".join(pieces),
            state.finish_reason,
            state.num_prompt_tokens,
            state.num_completion_tokens,
            clock.timings(request),
        )


def _engine_phases(chunk: TokenChunk) -> dict[str, float]:
    phases = {}
    if chunk.queue_ms is not None:
        phases["queue_ms"] = chunk.queue_ms
    if chunk.prefill_ms is not None:
        phases["prefill_ms"] = chunk.prefill_ms
    return phases


def _join(parts: list[str | bytes]) -> str | bytes:
    return b"".join(parts) if isinstance(parts[0], bytes) else "".join(parts)


class StreamingStage(ResponseStreamer):
    """The streaming node as its own deployment (scales apart from the ingress and the model)."""

    def __init__(self, config: AppConfig, model_handle):
        from serve_app.tokenizer import load_tokenizer

        model_path = resolve_model_path(config.model)
        super().__init__(load_tokenizer(config.model.tokenizer or model_path), model_handle)


StreamingDeployment = serve.deployment(StreamingStage, name="StreamingNode")
