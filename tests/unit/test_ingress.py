"""The real ingress (gate, relay, FastAPI app) driven over ASGI with a fake model backend: what a client sees for
whole answers, streams, errors before and after the first byte, overload, and a client that goes away."""

from __future__ import annotations

import asyncio
import json

import httpx

from serve_app.api.protocol import WholeResponse
from serve_app.config import AppConfig
from serve_app.ingress.replica import Ingress
from tests.unit.fake_backend import DONE, FakeBackend, served, sse

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def _ingress(backend: FakeBackend, **config) -> tuple[Ingress, httpx.AsyncClient]:
    app_config = AppConfig.model_validate(config)
    ingress = await Ingress.create(app_config, backends={app_config.model.resolved_name(): backend})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress.asgi_app()), base_url="http://ingress")
    return ingress, client


def test_a_whole_answer_is_sent_with_its_status_and_the_body_reaches_the_model_as_checked_json():
    async def main():
        backend = FakeBackend([served({"choices": [{"text": "ok"}], "usage": {"completion_tokens": 2}}, replica="r1")])
        ingress, client = await _ingress(backend)
        response = await client.post(CHAT, json=BODY, headers={"x-request-id": "client-id-1"})
        assert response.status_code == 200 and response.json()["choices"][0]["text"] == "ok"
        assert response.headers["x-serve-app-replica"] == "r1"
        request = backend.requests[0]
        assert request.endpoint == "chat" and request.body == BODY and request.wire == "sse"
        assert request.request_id == "client-id-1" and response.headers.get_list("x-request-id") == ["client-id-1"]
        assert ingress._admission.num_in_flight == 0

    asyncio.run(main())


def test_a_model_servers_refusal_keeps_its_retry_after_header():
    """A quarantined request or a restarting engine answers with Retry-After; the client must receive it."""
    async def main():
        from serve_app.api.errors import ServeAppError

        refusal = ServeAppError("refused", status_code=400, code="request_quarantined", headers={"Retry-After": "42"})
        _, client = await _ingress(FakeBackend([WholeResponse.from_error(refusal)]))
        response = await client.post(CHAT, json=BODY)
        assert response.status_code == 400 and response.json()["error"]["code"] == "request_quarantined"
        assert response.headers["retry-after"] == "42"

    asyncio.run(main())


def test_a_stream_is_relayed_frame_by_frame_and_ends_with_the_done_marker():
    async def main():
        frames = [sse('{"choices":[{"delta":{"content":"a"}}]}', has_output=True, num_tokens=1),
                  sse('{"choices":[{"delta":{"content":"b"}}]}', has_output=True, num_tokens=1), DONE]
        ingress, client = await _ingress(FakeBackend(frames))
        response = await client.post(CHAT, json={**BODY, "stream": True})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.text == "".join(f.data for f in frames)
        assert ingress._admission.num_in_flight == 0

    asyncio.run(main())


def test_a_bad_body_is_the_model_servers_400_before_the_first_byte():
    async def main():
        _, client = await _ingress(FakeBackend([DONE]))
        response = await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "temperature": "x"})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "temperature"
        response = await client.post(CHAT, json={**BODY, "nonsense": 1})  # the ingress's own check
        assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_parameter"

    asyncio.run(main())


def test_a_model_server_that_fails_before_output_is_a_503_to_retry():
    async def main():
        ingress, client = await _ingress(FakeBackend([RuntimeError("replica died")]))
        response = await client.post(CHAT, json={**BODY, "stream": True})
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        assert int(response.headers["retry-after"]) >= 1
        assert ingress._admission.num_in_flight == 0

    asyncio.run(main())


def test_a_model_server_lost_mid_stream_ends_the_stream_with_an_error_event_and_done():
    async def main():
        first = sse('{"choices":[{"delta":{"content":"a"}}]}', has_output=True, num_tokens=1)
        ingress, client = await _ingress(FakeBackend([first, RuntimeError("replica died")]))
        response = await client.post(CHAT, json={**BODY, "stream": True})
        assert response.status_code == 200
        events = [e for e in response.text.split("\n\n") if e]
        assert events[0] == first.data.strip()
        assert json.loads(events[1][len("data: "):])["error"]["code"] == "unavailable"
        assert events[2] == "data: [DONE]"
        assert ingress._admission.num_in_flight == 0

    asyncio.run(main())


def test_over_the_in_flight_cap_is_a_429_and_the_slot_comes_back():
    async def main():
        slow = [sse('{"choices":[{"delta":{"content":"a"}}]}', has_output=True, num_tokens=1), DONE]
        ingress, client = await _ingress(FakeBackend(slow, delay_s=0.3), admission={"max_in_flight_requests": 1})
        first = asyncio.create_task(client.post(CHAT, json={**BODY, "stream": True}))
        while ingress._admission.num_in_flight == 0:
            await asyncio.sleep(0.01)
        refused = await client.post(CHAT, json=BODY)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
        assert (await first).status_code == 200
        assert ingress._admission.num_in_flight == 0
        assert (await client.post(CHAT, json=BODY)).status_code == 200

    asyncio.run(main())


def test_a_client_that_goes_away_mid_stream_releases_its_slot_and_closes_the_model_stream():
    async def main():
        frames = [sse('{"choices":[{"delta":{"content":"a"}}]}', has_output=True, num_tokens=1)] * 50 + [DONE]
        backend = FakeBackend(frames, delay_s=0.05)
        ingress, client = await _ingress(backend)
        async with client.stream("POST", CHAT, json={**BODY, "stream": True}) as response:
            async for _ in response.aiter_bytes():
                break  # the first frame, then hang up
        for _ in range(100):
            if ingress._admission.num_in_flight == 0 and backend.num_closed:
                break
            await asyncio.sleep(0.02)
        assert ingress._admission.num_in_flight == 0 and backend.num_closed >= 1  # relay and cleanup both close it

    asyncio.run(main())


def test_importing_the_app_and_the_ingress_loads_neither_vllm_nor_torch():
    import subprocess
    import sys

    code = ("import pkgutil, sys, importlib, serve_app.app, serve_app.ingress\n"
            "for m in pkgutil.iter_modules(serve_app.ingress.__path__): importlib.import_module('serve_app.ingress.' + m.name)\n"
            "import serve_app.api.protocol, serve_app.api.endpoints\n"
            "print(sorted(n for n in ('vllm', 'torch') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_requests_waiting_at_tenancys_gate_count_in_the_autoscaling_signal(tmp_path):
    """Placement with_model: requests tenancy's fair gate holds back wait for this replica's engine, so the
    autoscaling policy must see them in `num_waiting` (the engine's own queue is empty while the gate holds them)."""
    profile = tmp_path / "slow.yaml"
    profile.write_text("""
name: slow
model: m
device: d
load_time_s: 0
frontend_ms: 1
max_num_seqs: 1
max_num_batched_tokens: 256
num_kv_cache_tokens: 4096
block_size_tokens: 16
max_model_len: 1024
default_max_tokens: 7
cost: {step_base_ms: 50, decode_ms_per_seq: 1, prefill_ms_per_token: 0.1}
sources: {all: test numbers}
""")

    async def main():
        config = AppConfig.model_validate({
            "model": {"source": str(tmp_path / "none"), "served_model_name": "sim"},
            "engine": {"backend": "simulated", "max_num_seqs": 1, "simulated": {"profile": str(profile)}},
            "tenancy": {"enabled": True, "reserved_slots": 0, "pace_prefills": False}})
        ingress = await Ingress.create(config)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress.asgi_app()), base_url="http://ingress")
        body = {"model": "sim", "prompt": "hello", "max_tokens": 20}
        sends = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(3)]
        waiting = 0.0
        for _ in range(100):
            await asyncio.sleep(0.02)
            waiting = max(waiting, ingress.record_autoscaling_stats()["num_waiting"])
        responses = await asyncio.gather(*sends)
        ingress._server.shutdown()
        return waiting, [r.status_code for r in responses]

    waiting, statuses = asyncio.run(main())
    assert statuses == [200, 200, 200]
    assert waiting >= 1  # at least one request held at the gate while the engine ran another
