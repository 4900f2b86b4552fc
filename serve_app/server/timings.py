"""serve_app's per-stage `timings` of one request (milliseconds; the serve_app extension on a stream's final
usage chunk and on whole responses). Pure: no vLLM, no Ray.

Each stage is measured once, between two stamps, and no stage contains another. Before the first token, in
order:

- `ingress_ms`: arrival at the ingress -> its hand-off to the model server, less any `gate_wait_ms`: headers,
  auth, reading and validating the body, routing, the replica check, tenancy's rate limits;
- `gate_wait_ms` (tenancy only): waiting at the ingress for a fair engine slot (queueing, shown apart);
- `handoff_ms`: the ingress's call -> the model server starting on the request (~0 in placement `with_model`,
  where the model server runs in the ingress's process; a Ray hop in placement `separate`);
- `frontend_ms`: the model server's start -> the engine core queueing the request: vLLM's OpenAI layer (prompt
  rendering, tokenization, an adapter's load) and the IPC to the engine core;
- `queue_ms`: queued -> scheduled in the engine core;
- `prefill_ms`: scheduled -> the engine core's first token;
- `output_ms` (streams only): the engine core's first token -> the model server's first frame that carries
  output: the token's IPC back to vLLM's frontend, detokenization, vLLM's chunk and serve_app's re-framing;

and `ttft_ms` is their sum: the first output frame (a whole response: the engine core's first token) less the
arrival at the ingress. What a client's TTFT holds beyond it: the frame's way to the client (a Ray hop back to
the ingress in placement `separate`, then Ray's HTTP proxy) and the request's way in (the proxy) before the
arrival. After the first token, `decode_ms` (first -> last token in the engine core). `predicted_ttft_ms`
(tenancy with a TTFT target) is the admission's prediction of the first token's time, not a stage.

Clocks: the ingress stamps the arrival and the hand-off, and the model server its start, with time.time() (the
wall clock: placement `separate` crosses processes, and hosts, whose clocks must then agree; a hop that comes
out negative across skewed hosts is reported as 0, and `ttft_ms` stays the sum). The engine's stages are
time.monotonic() differences, the clock of the engine core's own timestamps, counted from the model server's
start (taken on both clocks at once), so `frontend_ms` + `queue_ms` + `prefill_ms` (+ `output_ms`) is exactly
the model server's start -> the first token (its first output frame).
"""

from __future__ import annotations

# The stages before the first token, in order; `ttft_ms` is their sum.
STAGES_BEFORE_FIRST_TOKEN = ("ingress_ms", "gate_wait_ms", "handoff_ms", "frontend_ms", "queue_ms", "prefill_ms",
                             "output_ms")
# Every stage (the per-stage latency histogram records these, and not the totals or the prediction).
STAGES = STAGES_BEFORE_FIRST_TOKEN + ("decode_ms",)


def ingress_timings(arrival_s: float, handoff_s: float, gate_wait_s: float | None = None) -> dict[str, float]:
    """The ingress's stages: `arrival_s` and `handoff_s` are its time.time() stamps; `gate_wait_s` the seconds
    the request waited for a fair engine slot in between (None: tenancy off)."""
    total_ms = max(0.0, handoff_s - arrival_s) * 1000.0
    if gate_wait_s is None:
        return {"ingress_ms": total_ms}
    wait_ms = min(total_ms, max(0.0, gate_wait_s) * 1000.0)
    return {"ingress_ms": total_ms - wait_ms, "gate_wait_ms": wait_ms}


def request_timings(ingress_ms: dict[str, float], handoff_s: float | None, server_start_s: float,
                    engine_ttft_ms: float | None = None, queue_ms: float | None = None,
                    prefill_ms: float | None = None, output_ms: float | None = None,
                    decode_ms: float | None = None) -> dict[str, float]:
    """The request's `timings`.

    `ingress_ms`: the ingress's stages (`ingress_timings`) and anything else it reports (`predicted_ttft_ms`);
    `handoff_s`, `server_start_s`: time.time() of the ingress's hand-off (None: unknown) and of the model
    server's start; `engine_ttft_ms`: the model server's start -> the engine core's first token (None: no token
    yet), of which `queue_ms` and `prefill_ms` are the engine core's own (None: not reported); `output_ms`: the
    engine core's first token -> the first output frame (None: a whole response, or no output frame yet).
    """
    timings = {key: value for key, value in ingress_ms.items() if key in ("ingress_ms", "gate_wait_ms")}
    timings["handoff_ms"] = max(0.0, server_start_s - handoff_s) * 1000.0 if handoff_s else 0.0
    if engine_ttft_ms is not None:
        engine_ms = {"queue_ms": queue_ms, "prefill_ms": prefill_ms} if queue_ms is not None else {}
        engine_ms = {key: max(0.0, value or 0.0) for key, value in engine_ms.items()}
        timings["frontend_ms"] = max(0.0, engine_ttft_ms - sum(engine_ms.values()))
        timings.update(engine_ms)
        if output_ms is not None:
            timings["output_ms"] = max(0.0, output_ms)
        timings["ttft_ms"] = sum(timings[key] for key in STAGES_BEFORE_FIRST_TOKEN if key in timings)
        if decode_ms is not None:
            timings["decode_ms"] = max(0.0, decode_ms)
    timings.update((key, value) for key, value in ingress_ms.items() if key not in timings)
    return timings
