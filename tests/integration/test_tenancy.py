"""Tenants under overload on a real app (tiny model, 4 engine slots, tenants by a trusted header): a flooding tenant
does not hold a quiet one back, limits hold per tenant and count what a request used (its `n` sequences, the prompt
as the model server counted it), a request that cannot meet its TTFT target is refused at once, a priority a tenant
may not use is a 400, and a response's timings add up (a wait for a slot counted once). A second app with auth on
and tenancy: each key its own tenant whatever the header says, auth's own limits still hold, and the
tenant labels on /metrics are digests when metrics require auth. Last, each app's limiter actor is killed: with
`fail_open` a limited tenant is admitted on the replica's local share of its limit, then refused, and a tenant
without limits never notices; with `fail_closed` (the second app) a limited tenant gets a 503 while an unlimited
one is served, and the first request after `limits_retry_s` waits for a new actor instead of failing."""

from __future__ import annotations

import asyncio
import hashlib
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import make_test_config
from tests.integration.timings_check import assert_timings_add_up, check_timings, stream_timed

SLOTS = 4
RETRY_S = 4.0  # tenancy.limits_retry_s: how long a replica applies its failure mode before asking the actor again
FLOODED_GAP_MS = 200.0  # the client's TTFT over the server's, median, beside a flood on a busy 2-core machine
LEASE_TTL_S = 2.0  # tenancy.limits_lease_ttl_s (the default): a lease's unspent units are spent before any call


@pytest.fixture(scope="module")
def tenancy_url(module_app) -> str:
    config = make_test_config(
        model={"source": "tiny"}, engine={"max_num_seqs": SLOTS, "speculation": {"mode": "off"}},
        admission={"max_in_flight_requests": 64, "request_timeout_s": 120},
        tenancy={"enabled": True, "trust_tenant_header": True, "limits_backend": "cluster", "reserved_slots": 1,
                 "max_queue_wait_s": 60,
                 "tenants": {"flood": {"name": "flood"}, "quiet": {"name": "quiet"},
                             "metered": {"name": "metered", "requests_per_minute": 3},
                             "counted": {"name": "counted", "tokens_per_minute": 250},
                             "strict": {"name": "strict", "ttft_slo_ms": 1},
                             "outage": {"name": "outage", "requests_per_minute": 2}},
                 "limits_retry_s": RETRY_S})
    return module_app(config, "serve_app_tenancy", "/tenancy")


def _body(max_tokens: int, stream: bool = False) -> dict:
    return {"model": "tiny-llama", "prompt": "hello there", "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0, "stream": stream}


async def _timed(client: httpx.AsyncClient, url: str, tenant: str, max_tokens: int) -> tuple[int, float, float]:
    """(status, seconds to the first byte of output, seconds to the end)."""
    start = time.monotonic()
    first = None
    async with client.stream("POST", f"{url}/v1/completions", json=_body(max_tokens, stream=True),
                             headers={"x-tenant-id": tenant}) as response:
        async for _ in response.aiter_bytes():
            first = first or time.monotonic() - start
        return response.status_code, first or 0.0, time.monotonic() - start


def test_a_quiet_tenant_starts_at_once_beside_a_flood_and_finishes_before_the_backlog(tenancy_url):
    async def scenario():
        async with httpx.AsyncClient(timeout=120) as client:
            flood = [asyncio.create_task(_timed(client, tenancy_url, "flood", 200)) for _ in range(4 * SLOTS)]
            await asyncio.sleep(3)  # the flood fills SLOTS - 1 slots and queues the rest
            quiet = await _timed(client, tenancy_url, "quiet", 8)
            quiet_done_s = time.monotonic()
            flood_results = await asyncio.gather(*flood)
            return quiet, quiet_done_s, flood_results, time.monotonic()

    quiet, quiet_done_s, flood_results, end_s = asyncio.run(scenario())
    assert quiet[0] == 200 and all(status == 200 for status, _, _ in flood_results)
    # The quiet request did not wait for the flood's backlog: most flood requests were still to come or running.
    flood_finished_before_quiet = sum(1 for _, _, total in flood_results if total < quiet[2])
    assert flood_finished_before_quiet <= SLOTS, (quiet, flood_results)
    slowest_flood_first_byte = max(first for _, first, _ in flood_results)
    assert quiet[1] < slowest_flood_first_byte / 2, (quiet, slowest_flood_first_byte)


def test_a_tenants_request_limit_holds_and_names_itself(tenancy_url):
    statuses = []
    for _ in range(5):
        response = httpx.post(f"{tenancy_url}/v1/completions", json=_body(2), headers={"x-tenant-id": "metered"},
                              timeout=60)
        statuses.append(response.status_code)
        if response.status_code == 429:
            error = response.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and "metered" in error["message"]
            assert int(response.headers["retry-after"]) >= 1
    assert statuses == [200, 200, 200, 429, 429]
    # Other tenants are not affected.
    assert httpx.post(f"{tenancy_url}/v1/completions", json=_body(2), headers={"x-tenant-id": "quiet"},
                      timeout=60).status_code == 200


def test_a_request_that_cannot_meet_its_ttft_target_is_refused_at_once(tenancy_url):
    start = time.monotonic()
    response = httpx.post(f"{tenancy_url}/v1/completions", json=_body(2), headers={"x-tenant-id": "strict"},
                          timeout=60)
    assert time.monotonic() - start < 1.0
    assert response.status_code == 429, response.text[:300]
    assert response.json()["error"]["code"] == "deadline_unmeetable"
    assert int(response.headers["retry-after"]) >= 1
    # A request's own, looser target (header) replaces its tenant's.
    relaxed = httpx.post(f"{tenancy_url}/v1/completions", json=_body(2),
                         headers={"x-tenant-id": "strict", "x-ttft-slo-ms": "60000"}, timeout=60)
    assert relaxed.status_code == 200, relaxed.text[:300]


def test_a_priority_the_tenant_may_not_use_is_a_400(tenancy_url):
    response = httpx.post(f"{tenancy_url}/v1/completions", json=_body(2),
                          headers={"x-tenant-id": "quiet", "x-priority": "-5"}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-priority"


def test_streamed_timings_add_up_with_tenancy_and_count_a_wait_for_a_slot_once(tenancy_url):
    # Idle: a slot at once (gate_wait_ms ~0).
    assert_timings_add_up(tenancy_url, "tiny-llama", {"x-tenant-id": "quiet"}, gate=True)
    # Behind the tenant's own flood of whole responses (their clients just wait), its streams wait for a slot:
    # the wait is in gate_wait_ms alone, and ttft_ms still agrees with the client's.
    headers = {"x-tenant-id": "flood"}

    def measured():
        with httpx.Client(timeout=120) as client:
            return stream_timed(client, tenancy_url, "tiny-llama", headers)

    with ThreadPoolExecutor(3 * SLOTS) as pool:
        flood = [pool.submit(httpx.post, f"{tenancy_url}/v1/completions", json=_body(300), headers=headers,
                             timeout=120) for _ in range(2 * SLOTS)]
        time.sleep(1.0)  # the flood holds its slots and queues the rest
        waited = [future.result() for future in [pool.submit(measured) for _ in range(3)]]
        assert all(future.result().status_code == 200 for future in flood)
    gaps = [check_timings(timings, client_ms, gate=True) for timings, client_ms in waited]
    assert all(timings["gate_wait_ms"] > 50 for timings, _ in waited), waited
    # The ingress and Ray's proxy are busy with the flood here: the client's excess was 15-25 ms with this module
    # alone and 47-101 ms (median 70) inside the full suite, whose other apps share the two cores (2026-12-05).
    # What this guards against is seconds: a gate wait (~3.3 s here) missing from ttft_ms; one counted twice fails
    # check_timings (server above client).
    assert statistics.median(gaps) <= FLOODED_GAP_MS, (gaps, waited)


def test_a_tenants_token_limit_counts_every_sequence_and_what_was_used(tenancy_url):
    """n=3 x 20 tokens (ignore_eos) and a prompt of ~3 tokens: ~63 tokens each against 250 a minute, so the
    fourth is refused. Counting `len(body) // 4 + max_tokens` (~57) would let a fourth and fifth in; counting the
    estimate without settling (~97) would refuse the third."""
    body = {**_body(20), "n": 3}
    statuses = []
    for _ in range(4):
        response = httpx.post(f"{tenancy_url}/v1/completions", json=body, headers={"x-tenant-id": "counted"},
                              timeout=60)
        statuses.append(response.status_code)
        if response.status_code == 200:
            usage = response.json()["usage"]
            assert usage["completion_tokens"] == 60 and usage["prompt_tokens"] < 10, usage
    assert statuses == [200, 200, 200, 429], statuses


KEYS = ("sk-tenant-one", "sk-tenant-two", "sk-tenant-three")


@pytest.fixture(scope="module")
def auth_url(module_app, tmp_path_factory) -> str:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text("\n".join(KEYS) + "\n")
    config = make_test_config(
        model={"source": "tiny"}, engine={"max_num_seqs": SLOTS, "speculation": {"mode": "off"}},
        auth={"enabled": True, "api_keys_file": str(keys_file), "requests_per_minute": 3,
              "metrics_require_auth": True},
        tenancy={"enabled": True, "limits_backend": "cluster", "limits_failure_mode": "fail_closed",
                 "limits_retry_s": RETRY_S,
                 "tenants": {"metered": {"name": "metered", "requests_per_minute": 1},
                             # the third key's tenant has a limit of its own (the other keys' tenants have none)
                             "sha256:" + hashlib.sha256(KEYS[2].encode()).hexdigest():
                                 {"name": "three", "requests_per_minute": 50}}})
    return module_app(config, "serve_app_tenancy_auth", "/tenancy_auth")


def _post_as(url: str, key: str, tenant_header: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if tenant_header:
        headers["x-tenant-id"] = tenant_header
    return httpx.post(f"{url}/v1/completions", json=_body(2), headers=headers, timeout=60)


def test_with_auth_each_key_is_its_own_tenant_and_auths_limits_still_hold(auth_url):
    # The header names a tenant limited to 1 request a minute; with auth the key decides, so it does not apply.
    statuses = [_post_as(auth_url, KEYS[0], tenant_header="metered").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses  # auth.requests_per_minute: 3, enforced with tenancy on
    assert _post_as(auth_url, KEYS[1]).status_code == 200  # the other key's budget is its own
    metrics = httpx.get(f"{auth_url}/metrics", headers={"Authorization": f"Bearer {KEYS[1]}"}, timeout=60).text
    labels = re.findall(r'serve_app_tenant_admissions_total\{[^}]*tenant="([^"]+)"', metrics)
    assert labels, metrics[:2000]  # tenancy is on
    assert all(label.startswith("t-") for label in labels), labels  # digests: metrics are mirrored to Ray's port
    assert "metered" not in metrics and "key-" not in metrics


# ------------------------------------------------ the limiter actor goes away (last: each app gets a new one)


def _kill_limiter(app_name: str) -> None:
    """Kill the app's limiter actor, then wait out the leases the replica holds (spent without asking the actor:
    its background top-up after the last request leased one more unit), so the next request must ask."""
    import ray

    from serve_app.tenancy.limiter_actor import SERVE_NAMESPACE, limiter_actor_name

    ray.kill(ray.get_actor(limiter_actor_name(app_name), namespace=SERVE_NAMESPACE), no_restart=True)
    time.sleep(LEASE_TTL_S + 0.5)


def _post_tenant(url: str, tenant: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json=_body(2), headers={"x-tenant-id": tenant}, timeout=60)


def test_fail_open_admits_on_the_local_share_of_a_limit_while_the_limiter_is_gone(tenancy_url):
    assert _post_tenant(tenancy_url, "outage").status_code == 200  # a lease from the actor (created if none)
    _kill_limiter("serve_app_tenancy")
    started = time.monotonic()
    statuses = [_post_tenant(tenancy_url, "outage").status_code for _ in range(3)]
    assert time.monotonic() - started < RETRY_S, "the outage must be seen within one retry period"
    # fail_open: admitted (not a 503) on the replica's local share of the 2 requests a minute (the limit / the
    # replicas the ledger last counted), then that share's 429
    assert statuses[0] == 200 and 429 in statuses and statuses == sorted(statuses), statuses
    assert _post_tenant(tenancy_url, "quiet").status_code == 200  # a tenant without limits never notices


def test_fail_closed_refuses_only_limited_tenants_with_a_503_while_the_limiter_is_gone(auth_url):
    # The app's first limited request waits for the actor's first start (seconds on a busy node), not refused.
    assert _post_as(auth_url, KEYS[2]).status_code == 200
    _kill_limiter("serve_app_tenancy_auth")
    refused = _post_as(auth_url, KEYS[2])
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "limiter_unavailable" and error["type"] == "server_error"
    assert int(refused.headers["Retry-After"]) >= 1
    assert _post_as(auth_url, KEYS[1]).status_code == 200  # its tenant has no limits: not refused
    time.sleep(RETRY_S + 1.0)
    assert _post_as(auth_url, KEYS[2]).status_code == 200  # waits for a new actor to start, then answers
