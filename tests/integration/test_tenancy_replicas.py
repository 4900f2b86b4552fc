"""Tenancy across several replicas on a real app: placement `separate`, two ingress replicas in front of two model
replicas of the tiny model with 2 engine rows each (+1 reserved row each), tenants by a trusted header.

Each ingress replica gates its part of the running engines' rows (serve_app/ingress/tenant_admission.py:
gate_size), so a flood runs as many requests at once as the engines have shared rows (4: not one replica's 2, and
not each ingress's own 4, which would put 8 into 6 rows and queue the rest inside the engines, where fair order no
longer decides), the rest of the flood waits at the gates, and a quiet tenant's request beside it starts at once
(each ingress keeps its part of the reserve)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import make_test_config

ROWS = 2  # engine.max_num_seqs per model replica
MODEL_REPLICAS = INGRESS_REPLICAS = 2
FLOOD = 12
AT_ONCE_MS = 50.0  # a gate wait under this: admitted at once


@pytest.fixture(scope="module")
def replicas_url(module_app) -> str:
    config = make_test_config(
        model={"source": "tiny"}, engine={"max_num_seqs": ROWS, "speculation": {"mode": "off"}},
        ingress_placement="separate", ingress_deployment={"num_replicas": INGRESS_REPLICAS},
        model_deployment={"num_replicas": MODEL_REPLICAS},
        admission={"max_in_flight_requests": 64, "request_timeout_s": 120},
        tenancy={"enabled": True, "trust_tenant_header": True, "limits_backend": "local", "reserved_slots": 1,
                 "max_queue_wait_s": 60, "tenants": {"flood": {"name": "flood"}, "quiet": {"name": "quiet"}}})
    return module_app(config, "serve_app_tenancy_replicas", "/tenancy-replicas")


def _post(url: str, tenant: str, max_tokens: int) -> dict:
    response = httpx.post(f"{url}/v1/completions", timeout=120, headers={"x-tenant-id": tenant}, json={
        "model": "tiny-llama", "prompt": "hello there", "max_tokens": max_tokens, "ignore_eos": True,
        "temperature": 0})
    assert response.status_code == 200, response.text[:300]
    return response.json()["timings"]


def _warm_both_ingress_views(url: str) -> None:
    """Both ingress replicas read the controller's replica view after the app is up: a view read while the model
    replicas were starting (one running) sizes a gate for one, until a request arrives past the view's 2 s cache and
    starts a fresh read in the background. One request reaches one ingress; in concurrent pairs Ray's proxy sends
    the second to the ingress not busy with the first. Two rounds: the first starts the reads, the second comes
    after they are in (on a slow 2-core Xeon one warm request left a gate sized for one replica: 2 admitted, not 4)."""
    for _ in range(2):
        time.sleep(2.5)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: _post(url, "quiet", 4), range(4)))


def test_a_flood_fills_every_engines_rows_waits_at_the_gates_and_a_quiet_tenant_starts_at_once(replicas_url):
    _warm_both_ingress_views(replicas_url)
    with ThreadPoolExecutor(FLOOD + 1) as pool:
        flood = [pool.submit(_post, replicas_url, "flood", 300) for _ in range(FLOOD)]
        time.sleep(1.0)  # the flood holds its slots and queues the rest at the gates
        quiet = [_post(replicas_url, "quiet", 4) for _ in range(3)]
        flood_timings = [future.result() for future in flood]
    at_once = sum(timings["gate_wait_ms"] < AT_ONCE_MS for timings in flood_timings)
    shared_rows = ROWS * MODEL_REPLICAS
    # Each ingress admits its half of the 4 shared rows at once (3 if Ray's proxy sent one ingress a single request
    # of the first few); gates sized for one model replica would admit 2, gates each counting both replicas 8.
    assert shared_rows - 1 <= at_once <= shared_rows, flood_timings
    assert sum(timings["gate_wait_ms"] >= AT_ONCE_MS for timings in flood_timings) >= FLOOD - shared_rows
    # What the gates admitted found an engine row: none waited in an engine's own queue for a whole request.
    slow_in_engine_queue = [timings for timings in flood_timings + quiet if timings["queue_ms"] > 100.0]
    assert len(slow_in_engine_queue) <= 1, slow_in_engine_queue
    # The quiet tenant took its ingress's reserved slot beside the flood each time.
    assert all(timings["gate_wait_ms"] < AT_ONCE_MS for timings in quiet), quiet
