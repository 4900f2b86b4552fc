"""Tenancy in the real ingress (gate, relay) over ASGI with a fake model backend: the API key's limits still hold
with tenancy on, and a request is charged what it used (the model server's prompt count, every output token of
every sequence), not `len(body) // 4 + max_tokens`."""

from __future__ import annotations

import asyncio

import httpx

from serve_app.api.protocol import Frame, RequestOutcome, WholeResponse
from serve_app.config import AppConfig
from serve_app.ingress.auth import hash_key
from serve_app.ingress.replica import Ingress
from tests.unit.fake_backend import DONE, FakeBackend, served, sse

CHAT = "/v1/chat/completions"
KEY = "sk-tenant-a"
TENANCY = {"enabled": True, "limits_backend": "local"}


async def _ingress(backend: FakeBackend, monkeypatch, **config) -> tuple[Ingress, httpx.AsyncClient]:
    monkeypatch.setenv("SERVE_APP_API_KEYS", KEY)
    app_config = AppConfig.model_validate(config)
    ingress = await Ingress.create(app_config, backends={app_config.model.resolved_name(): backend})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress.asgi_app()), base_url="http://ingress",
                               headers={"Authorization": f"Bearer {KEY}"})
    return ingress, client


def _key_tokens(ingress: Ingress) -> int:
    return ingress._gate._auth._windows[hash_key(KEY)].num_tokens


def _stream(num_prompt_tokens: int, num_tokens: int) -> list[Frame]:
    chunks = [sse('{"choices":[{"delta":{"content":"x"}}]}', has_output=True, num_tokens=1) for _ in range(num_tokens)]
    return [*chunks, Frame(DONE.data, is_final=True, outcome=RequestOutcome(num_prompt_tokens, num_tokens, {}))]


def test_auth_limits_still_hold_with_tenancy_on(monkeypatch):
    async def main():
        backend = FakeBackend([served({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})])
        _, client = await _ingress(backend, monkeypatch, tenancy=TENANCY,
                                   auth={"enabled": True, "requests_per_minute": 2})
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        statuses = [(await client.post(CHAT, json=body)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]

    asyncio.run(main())


def test_a_stream_without_max_tokens_is_charged_the_prompt_the_model_counted_and_every_token_generated(monkeypatch):
    async def main():
        ingress, client = await _ingress(FakeBackend(_stream(num_prompt_tokens=57, num_tokens=300)), monkeypatch,
                                         tenancy=TENANCY, auth={"enabled": True, "tokens_per_minute": 100_000})
        response = await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert response.status_code == 200
        # Estimated at admission as ~10 prompt tokens + 256 expected output; reconciled to what was used.
        assert _key_tokens(ingress) == 57 + 300

    asyncio.run(main())


def test_n_sequences_are_all_charged_and_an_error_answer_costs_nothing(monkeypatch):
    async def main():
        backend = FakeBackend([served({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 24}})])
        ingress, client = await _ingress(backend, monkeypatch, tenancy=TENANCY,
                                         auth={"enabled": True, "tokens_per_minute": 100_000})
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "n": 3}
        assert (await client.post(CHAT, json=body)).status_code == 200
        assert _key_tokens(ingress) == 20 + 24
        backend.items = [WholeResponse(400, {"error": {"message": "bad", "type": "invalid_request_error"}})]
        assert (await client.post(CHAT, json=body)).status_code == 400
        assert _key_tokens(ingress) == 20 + 24

    asyncio.run(main())


def test_a_tenant_that_used_more_than_estimated_is_pushed_back_in_the_fair_order(monkeypatch):
    async def main():
        ingress, client = await _ingress(FakeBackend(_stream(num_prompt_tokens=1000, num_tokens=50)), monkeypatch,
                                         tenancy=TENANCY)
        response = await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
                                                 "stream": True})
        assert response.status_code == 200
        gate = next(iter(ingress._gate._tenants._gates.values()))
        (state,) = gate.queue._tenants.values()  # the key's tenant: its finish tag holds 1,050 tokens, not ~60
        assert state.finish_tag == gate.queue.virtual_time + 1050

    asyncio.run(main())


def _admission(**config):
    from serve_app.ingress.tenant_admission import TenantAdmission

    return TenantAdmission(AppConfig.model_validate(config), "test")


def test_the_tenant_header_is_read_only_when_the_config_trusts_it_and_never_with_auth():
    tenancy = {**TENANCY, "tenants": {"gold": {"name": "gold", "weight": 10}}}
    headers = {"x-tenant-id": "gold"}
    assert _admission(tenancy=tenancy).tenant_of(None, headers).name == "default"  # any client could send it
    trusted = _admission(tenancy={**tenancy, "trust_tenant_header": True})
    assert trusted.tenant_of(None, headers).name == "gold"
    assert trusted.tenant_of("ab" * 32, headers).name.startswith("key-")  # with auth the key decides


def test_tenant_labels_are_hashed_when_metrics_require_auth(monkeypatch):
    monkeypatch.setenv("SERVE_APP_API_KEYS", KEY)
    tenancy = {**TENANCY, "tenants": {"gold": {"name": "gold"}}}
    open_metrics = _admission(tenancy=tenancy)
    tenant = open_metrics.tenancy.tenants["gold"]
    assert open_metrics.metric_label(tenant) == "gold"
    closed = _admission(tenancy=tenancy, auth={"enabled": True, "metrics_require_auth": True})
    label = closed.metric_label(tenant)
    assert label.startswith("t-") and "gold" not in label and label == closed.metric_label(tenant)


def _view(**running: int) -> dict:
    return {name: ({"RUNNING": n}, "HEALTHY") for name, n in running.items()}


def test_gates_follow_the_running_replicas_of_the_model_and_of_the_ingress():
    admission = _admission(model={"source": "tiny"}, engine={"max_num_seqs": 8}, ingress_placement="separate",
                           tenancy=TENANCY)
    admission._deployments, admission._ingress_deployment = {"tiny-llama": "Model"}, "Ingress"
    gate = admission._gates["tiny-llama"]
    assert (gate.capacity, gate.reserved) == (9, 1)  # one model replica, one ingress replica: 8 rows + 1 above
    admission.follow_replicas(_view(Model=3, Ingress=1))  # the autoscaler added two model replicas
    assert (gate.capacity, gate.reserved) == (27, 3)
    admission.follow_replicas(_view(Model=3, Ingress=2))  # and an ingress replica: each gets half
    assert (gate.capacity, gate.reserved) == (13, 1)
    admission.follow_replicas(_view(Model=0, Ingress=2))  # scaled to zero: keep the last size for the cold start
    assert gate.capacity == 13
    assert admission.gate_stats()["tiny-llama"].capacity == 13


class _ReplicaView:
    """health.DeploymentReplicas as the gate reads it: the last view at once (`peek`), or a fresh one (`get`)."""

    def __init__(self, view: dict):
        self.view = view

    def peek(self) -> dict:
        return self.view

    async def get(self, max_age_s: float | None = None) -> dict:
        return self.view


def test_a_request_waiting_at_the_gate_takes_a_replica_added_meanwhile_without_a_new_arrival(monkeypatch):
    """A closed-loop flood whose clients all wait at the gate sends no new request: the gate must read the replica
    view again while they wait, or the replica the autoscaler added for them stays idle until one finishes."""
    from serve_app.ingress import tenant_admission

    monkeypatch.setattr(tenant_admission, "FOLLOW_INTERVAL_S", 0.01)
    replicas = _ReplicaView(_view(Model=1, Ingress=1))
    admission = tenant_admission.TenantAdmission(
        AppConfig.model_validate({"model": {"source": "tiny"}, "engine": {"max_num_seqs": 1},
                                  "ingress_placement": "separate", "tenancy": {**TENANCY, "reserved_slots": 0}}),
        "test", replicas=replicas, deployments={"tiny-llama": "Model"}, ingress_deployment="Ingress")
    tenant = admission.tenancy.default_tenant

    async def main():
        import time

        now = time.time()
        held = await admission.admit("tiny-llama", tenant, {}, 10, 100, now, now + 60)
        waiting = asyncio.ensure_future(admission.admit("tiny-llama", tenant, {}, 10, 100, now, now + 60))
        await asyncio.sleep(0.05)
        assert not waiting.done() and admission.gate_stats()["tiny-llama"].num_waiting == 1
        replicas.view = _view(Model=2, Ingress=1)  # the autoscaler's new replica is running
        second = await asyncio.wait_for(waiting, timeout=2)
        stats = admission.gate_stats()["tiny-llama"]
        assert (stats.capacity, stats.num_in_use, stats.num_waiting) == (2, 2, 0)
        for admitted in (held, second):
            admitted.release()
        replicas.view = _view(Model=1, Ingress=1)  # scaled back down: a scrape shows it before any new request
        admission.follow_live_replicas()
        assert admission.gate_stats()["tiny-llama"].capacity == 1

    asyncio.run(main())


def test_the_gates_are_on_the_ingress_metrics(monkeypatch):
    async def main():
        ingress, client = await _ingress(FakeBackend([_stream(5, 3)]), monkeypatch, model={"source": "tiny"},
                                         engine={"max_num_seqs": 4}, auth={"enabled": True}, tenancy=TENANCY)
        async with client:
            text = (await client.get("/metrics")).text
        assert 'serve_app_tenancy_gate_slots{model="tiny-llama"} 5.0' in text  # 4 rows + 1 reserved above them
        for idle in ("in_use", "waiting", "queued_tokens"):
            assert f'serve_app_tenancy_gate_{idle}{{model="tiny-llama"}} 0.0' in text

    asyncio.run(main())


def test_with_model_placement_gates_only_the_replicas_own_engine():
    admission = _admission(model={"source": "tiny"}, engine={"max_num_seqs": 8}, ingress_placement="with_model",
                           model_deployment={"num_replicas": 4}, tenancy=TENANCY)
    admission.follow_replicas(_view(Model=4))
    assert admission._gates["tiny-llama"].capacity == 9  # not 4 x 8: every other engine has its own gate


def test_requests_refused_for_their_deadline_are_demand_the_autoscaler_sees():
    """Deadline admission keeps the engine's queue short under overload; the refused requests must still reach
    the policy (as waiting load), or a queue-driven policy never scales up."""
    import pytest

    from serve_app.api.errors import ServeAppError

    admission = _admission(model={"source": "tiny"}, engine={"max_num_seqs": 2},
                           tenancy={**TENANCY, "reserved_slots": 0,
                                    "default_tenant": {"name": "default", "ttft_slo_ms": 50}})
    tenant = admission.tenancy.default_tenant

    async def main():
        import time

        now = time.time()
        held = [await admission.admit("tiny-llama", tenant, {}, 10, 400, now, now + 60) for _ in range(2)]
        assert admission.shed_demand()["tiny-llama"] == 0.0
        with pytest.raises(ServeAppError) as refused:  # both slots busy for 400 tokens: the target cannot be met
            await admission.admit("tiny-llama", tenant, {}, 10, 400, now, now + 60)
        assert refused.value.status_code == 429 and refused.value.code in ("deadline_unmeetable",
                                                                           "deadline_missed_in_queue")
        assert admission.shed_demand()["tiny-llama"] > 0.0
        for admitted in held:
            admitted.release()

    asyncio.run(main())


def test_a_slot_is_handed_on_as_the_last_step_of_a_request_at_its_bound_begins():
    """A refill released at the request's end reaches the engine a step after the row freed (a tenant alone ran
    0.90x first come first served with 16-token requests); at its bound the last step is known to have begun once
    what is left fits in one more frame. A request without a bound, or one that stops sooner, holds to its end."""
    admission = _admission(model={"source": "tiny"}, engine={"max_num_seqs": 4}, tenancy=TENANCY)
    tenant = admission.tenancy.default_tenant
    gate = admission._gates["tiny-llama"]

    async def main():
        import time

        now = time.time()
        bounded = await admission.admit("tiny-llama", tenant, {}, 10, 4, now, now + 60)
        unbounded = await admission.admit("tiny-llama", tenant, {}, 10, 0, now, now + 60)
        two = await admission.admit("tiny-llama", tenant, {}, 10, 3, now, now + 60, num_sequences=2)
        assert gate.num_in_use == 3
        for _ in range(2):
            bounded.generated(1)
            unbounded.generated(1)
        assert gate.num_in_use == 3  # 2 of 4 tokens: two steps to go
        bounded.generated(1)
        assert gate.num_in_use == 2  # 1 token left: its last step runs now
        bounded.release()  # the end releases nothing twice
        assert gate.num_in_use == 2
        for _ in range(3):
            two.generated(1)  # n = 2: frames of one sequence's token each
        assert gate.num_in_use == 2  # 3 of 2 x 3 tokens
        two.generated(1)
        assert gate.num_in_use == 1  # one token per sequence left: the last step
        for _ in range(500):
            unbounded.generated(1)
        assert gate.num_in_use == 1
        chunky = await admission.admit("tiny-llama", tenant, {}, 10, 2000, now, now + 60)
        chunky.generated(1000)  # frames of 1,000 tokens (stream_interval): 1,000 left is 1,000 steps, not one
        assert gate.num_in_use == 2
        chunky.generated(999)
        assert gate.num_in_use == 1  # now one token is left
        unbounded.release()
        two.release()
        assert gate.num_in_use == 0

    asyncio.run(main())
