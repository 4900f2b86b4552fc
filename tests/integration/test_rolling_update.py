"""A rolling update under load cuts no stream: while four clients keep streaming completions, the app is
redeployed with a changed config (Serve starts a new replica, then drains the old one for up to
`graceful_shutdown_timeout_s` = request timeout + 5 s); every stream started before, during and after ends with
its finish reason and `[DONE]`, and none is refused. Tiny model, an app of its own (default placement: the ingress
inside the model server replica)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from loadtest.sse import sse_data
from serve_app.ingress.relay import REPLICA_HEADER
from tests.integration.conftest import make_test_config

pytestmark = pytest.mark.integration

APP, PREFIX = "serve_app_tiny_rolling", "/rolling"
STREAM = {"model": "tiny-llama", "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
          "temperature": 0, "stream": True}


def _config(log_prompts: bool):
    return make_test_config(model={"source": "tiny"}, engine={"max_num_seqs": 8},
                            admission={"request_timeout_s": 60, "max_tokens_limit": 2000},
                            logging={"log_prompts": log_prompts})


def _stream_once(url: str) -> str:
    """'ok', or what went wrong with this stream."""
    finish, done = None, False
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=STREAM, timeout=120) as response:
            if response.status_code != 200:
                return f"status {response.status_code}: {response.read()[:200]!r}"
            for data in sse_data(response.iter_bytes()):
                if data == "[DONE]":
                    done = True
                else:
                    event = json.loads(data)
                    if "error" in event:
                        return f"error event {event['error']}"
                    for choice in event.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok" if done and finish == "length" else f"cut short (finish={finish}, done={done})"


def test_a_rolling_update_under_load_cuts_no_stream(module_app):
    from ray import serve

    url = module_app(_config(log_prompts=False), APP, PREFIX)

    def replica() -> str:
        response = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        return response.headers[REPLICA_HEADER]

    old_replica = replica()
    outcomes: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            outcomes.append(_stream_once(url))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(5)
    started = len(outcomes)
    module_app(_config(log_prompts=True), APP, PREFIX)  # the rolling update: the same app, a changed config
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until the old replica has drained and gone
        states = serve.status().applications[APP].deployments
        replicas = [{str(getattr(k, "value", k)): n for k, n in d.replica_states.items()} for d in states.values()]
        if all(r == {"RUNNING": 1} for r in replicas) and len(outcomes) > started + 8:
            break
        time.sleep(1)
    time.sleep(5)
    stop.set()
    for thread in clients:
        thread.join(timeout=150)
    assert replica() != old_replica, "the update did not replace the replica"
    failures = [o for o in outcomes if o != "ok"]
    assert not failures, f"{len(failures)} of {len(outcomes)} streams failed: {failures[:5]}"
    assert len(outcomes) >= 12, outcomes
