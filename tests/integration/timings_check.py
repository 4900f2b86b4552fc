"""Over HTTP: a streamed chat completion's `timings` (its final usage chunk) add up, and agree with the client.

Per response: the stages before the first token (serve_app/server/timings.py) sum to `ttft_ms` (within the
usage chunk's rounding to 0.01 ms) and none is negative; the server's `ttft_ms` (arrival at the ingress -> the
model server's first output frame) lies inside the client's own TTFT (request sent -> first content chunk read),
which also holds Ray's HTTP proxy both ways (and in placement `separate` the frame's Ray hop back to the ingress).
Over a few requests, the median of that gap is at most CLIENT_GAP_MS: what the server does not count is small,
so no stage is missing (and none is counted twice: the old `timings` counted the ingress, and the fair gate's
wait, twice).
"""

from __future__ import annotations

import json
import statistics
import time

import httpx

from loadtest.sse import sse_data
from serve_app.server.timings import STAGES_BEFORE_FIRST_TOKEN

# The median gap between the client's TTFT and the server's `ttft_ms`: Ray's HTTP proxy in and out, the relay,
# the client's parsing (measured on an idle 2-core machine, placement with_model: ~7 ms from the client's send to
# the ingress, ~3 ms from the relay to the client's read; the bound leaves room for a noisy machine).
CLIENT_GAP_MS = 20.0
# The usage chunk rounds every value to 0.01 ms: the sum of 6 rounded stages may differ from rounded ttft by this.
ROUNDING_MS = 0.005 * (len(STAGES_BEFORE_FIRST_TOKEN) + 1)


def stream_timed(client: httpx.Client, base_url: str, model: str, headers: dict | None = None,
                 max_tokens: int = 16) -> tuple[dict[str, float], float]:
    """(the response's `timings`, the client's TTFT in ms) of one streamed chat completion. Sampled, with a seed:
    the tiny model's random weights pick, greedily, tokens that decode to no text (or the end of text), and the
    client's TTFT and the server's first output frame both count to the first chunk with text."""
    body = {"model": model, "messages": [{"role": "user", "content": "Name three colors."}], "max_tokens": max_tokens,
            "temperature": 1.0, "seed": 1, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    timings = first_s = None
    start_s = time.perf_counter()
    with client.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()[:300]
        for data in sse_data(response.iter_bytes()):
            if data == "[DONE]":
                continue
            chunk = json.loads(data)
            if first_s is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
                first_s = time.perf_counter()
            if "timings" in chunk:
                timings = chunk["timings"]
    assert first_s is not None, "no content chunk"
    assert timings is not None, "no timings in the usage chunk"
    return timings, (first_s - start_s) * 1000.0


def check_timings(timings: dict[str, float], client_ttft_ms: float, *, gate: bool) -> float:
    """Asserts one response's timings add up and lie inside the client's TTFT; returns the client's excess (ms)."""
    expected = {"ingress_ms", "handoff_ms", "frontend_ms", "queue_ms", "prefill_ms", "output_ms", "ttft_ms",
                "decode_ms"}
    assert expected <= set(timings), timings
    assert ("gate_wait_ms" in timings) == gate, timings
    stages = [timings[key] for key in STAGES_BEFORE_FIRST_TOKEN if key in timings]
    assert all(value >= 0 for value in timings.values()), timings
    assert abs(sum(stages) - timings["ttft_ms"]) <= ROUNDING_MS, timings
    gap_ms = client_ttft_ms - timings["ttft_ms"]
    # The server's interval lies inside the client's (1 ms for the two processes' clock reads).
    assert gap_ms >= -1.0, f"server ttft_ms {timings['ttft_ms']:.2f} > the client's {client_ttft_ms:.2f}: {timings}"
    return gap_ms


def assert_timings_add_up(base_url: str, model: str, headers: dict | None = None, *, gate: bool = False,
                          num_requests: int = 7) -> list[tuple[dict[str, float], float]]:
    """Streams `num_requests` chat completions one after another (after a warm-up) and checks their timings;
    returns (timings, client TTFT ms) of each."""
    with httpx.Client(timeout=120) as client:
        stream_timed(client, base_url, model, headers)  # warm: the connection, the chat template, the caches
        results = [stream_timed(client, base_url, model, headers) for _ in range(num_requests)]
    gaps = [check_timings(timings, client_ms, gate=gate) for timings, client_ms in results]
    report = [(round(client_ms, 2), timings) for timings, client_ms in results]
    assert statistics.median(gaps) <= CLIENT_GAP_MS, f"client TTFT - server ttft_ms: {gaps}; {report}"
    print(f"client TTFT - server ttft_ms (ms): {[round(g, 2) for g in gaps]}; {report}")
    return results
