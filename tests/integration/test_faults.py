"""Faults through the real graph: kill a stage's replica (or the engine process) mid-stream.

What a client relies on: an open stream ends with an `{"error": ...}` event and `[DONE]` instead of
hanging or being cut; `/health` says 503 while the engine is dead; and new requests succeed once Ray
Serve has replaced the replica. The tiny model (fast restart) runs as its own app so the shared app
is never disturbed.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import psutil
import pytest

from tests.integration.conftest import TINY_APP, kill_replica, replica_processes

pytestmark = pytest.mark.integration

LONG_STREAM = {"model": "tiny-llama", "prompt": "Once upon a time", "max_tokens": 1800, "ignore_eos": True,
               "temperature": 0, "stream": True}
RECOVERY_TIMEOUT_S = 240


@pytest.fixture
def faults_url(tiny_app_url):
    return tiny_app_url


def _kill_replica(deployment: str) -> None:
    kill_replica(TINY_APP, deployment)


def _engine_process() -> psutil.Process:
    (replica,) = replica_processes(TINY_APP, "ModelReplica")
    children = replica.children(recursive=True)
    engines = [p for p in children if "EngineCor" in p.name()]
    assert engines, f"no engine process under model replica pid {replica.pid}: {[p.name() for p in children]}"
    return engines[0]


def _wait_until_serving(base_url: str) -> float:
    """Seconds until /health is 200 and a completion succeeds (Serve replaced the replica)."""
    start = time.monotonic()
    while time.monotonic() - start < RECOVERY_TIMEOUT_S:
        try:
            if httpx.get(f"{base_url}/health", timeout=10).status_code == 200:
                response = httpx.post(f"{base_url}/v1/completions", timeout=60, json={
                    "model": "tiny-llama", "prompt": "Hello", "max_tokens": 4})
                if response.status_code == 200:
                    assert response.json()["usage"]["completion_tokens"] >= 1
                    return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{base_url} did not recover within {RECOVERY_TIMEOUT_S} s")


def _stream_then_fault(base_url: str, fault) -> list[str]:
    """Open a long stream, cause `fault` after a few events, return every data line until the stream ends."""
    events: list[str] = []
    with httpx.stream("POST", f"{base_url}/v1/completions", json=LONG_STREAM, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[len("data: "):])
            if len(events) == 3:
                fault()
    return events


def _assert_ended_with_error(events: list[str]) -> None:
    assert events[-1] == "[DONE]", f"stream did not end with [DONE]: {events[-3:]}"
    last = json.loads(events[-2])
    assert "error" in last, f"no error event before [DONE]: {events[-3:]}"
    assert last["error"]["message"]
    text_events = [json.loads(e) for e in events[:-2]]
    assert len(text_events) >= 3 and all("choices" in e for e in text_events)
    # It ended early: far fewer tokens than asked for.
    assert len(text_events) < LONG_STREAM["max_tokens"]


def test_model_replica_killed_mid_stream(faults_url):
    _wait_until_serving(faults_url)
    events = _stream_then_fault(faults_url, lambda: _kill_replica("ModelReplica"))
    _assert_ended_with_error(events)
    _wait_until_serving(faults_url)


def test_engine_process_killed_health_is_503_until_replaced(faults_url):
    _wait_until_serving(faults_url)
    engine = _engine_process()
    events = _stream_then_fault(faults_url, lambda: os.kill(engine.pid, signal.SIGKILL))
    _assert_ended_with_error(events)
    statuses = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and 503 not in statuses:
        statuses.append(httpx.get(f"{faults_url}/health", timeout=20).status_code)
        time.sleep(0.2)
    assert 503 in statuses, f"/health never reported the dead engine: {statuses}"
    body = httpx.get(f"{faults_url}/health", timeout=20)
    if body.status_code == 503:
        assert body.json()["error"]["code"] == "engine_unavailable"
    _wait_until_serving(faults_url)


def test_streaming_node_killed_mid_stream(faults_url):
    _wait_until_serving(faults_url)
    events = _stream_then_fault(faults_url, lambda: _kill_replica("StreamingNode"))
    _assert_ended_with_error(events)
    _wait_until_serving(faults_url)


def test_tokenizer_killed_requests_wait_for_its_replacement(faults_url):
    _wait_until_serving(faults_url)
    _kill_replica("Tokenizer")
    # Sent while the tokenizer is down: it waits for the replacement (or gets an explicit error), never hangs.
    response = httpx.post(f"{faults_url}/v1/completions", timeout=90, json={
        "model": "tiny-llama", "prompt": "Hello", "max_tokens": 4})
    if response.status_code == 200:
        assert response.json()["usage"]["completion_tokens"] >= 1
    else:
        assert response.status_code in (503, 504) and response.json()["error"]["message"]
    _wait_until_serving(faults_url)
