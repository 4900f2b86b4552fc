"""Prefix-cache-aware routing: prompt text, chained block hashes, the prefix index, the decision, the Ray router."""

import asyncio
import random
import subprocess
import sys
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from serve_app.config import PrefixRoutingConfig
from serve_app.routing.prefix_affinity import (
    PrefixIndex,
    RoutingReason,
    choose_replica,
    decide_replica,
    power_of_two_choices,
    prefix_hashes,
    prompt_text,
)

SYSTEM = "You are a careful assistant of the Acme help desk. " * 20  # 1,040 characters


def chat(*turns, system=SYSTEM):
    messages = [{"role": "system", "content": system}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return {"model": "m", "messages": messages}


# prompt_text


def test_chat_text_has_roles_and_parts():
    text = prompt_text({"messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": [{"type": "text", "text": "hello"},
                                                                  {"type": "text", "text": "there"}]}]})
    positions = [text.index(word) for word in ("system", "be brief", "user", "hello", "there")]
    assert positions == sorted(positions)
    same_words_other_role = prompt_text({"messages": [{"role": "user", "content": "be brief"}]})
    assert prompt_text({"messages": [{"role": "system", "content": "be brief"}]}) != same_words_other_role


def test_chat_text_from_vllm_request_and_pydantic_messages():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    request = ChatCompletionRequest(model="m", messages=[{"role": "system", "content": "rules"},
                                                         {"role": "user", "content": "hi"}])
    text = prompt_text(request)
    assert "rules" in text and "hi" in text

    class Message(BaseModel):
        role: str
        content: str

    class Body(BaseModel):
        messages: list[Message]

    assert prompt_text(Body(messages=[Message(role="system", content="rules"), Message(role="user", content="hi")])) \
        == prompt_text({"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}]})


def test_a_later_turn_extends_the_earlier_text():
    first = prompt_text(chat("What are your hours?"))
    second = prompt_text(chat("What are your hours?", "We open at nine.", "And on Sundays?"))
    assert second.startswith(first)


def test_tool_calls_are_part_of_the_text():
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}
    text = prompt_text({"messages": [{"role": "user", "content": "x"}, call]})
    assert "lookup" in text and "c1" in text


def test_completion_prompt_shapes():
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    assert prompt_text(CompletionRequest(model="m", prompt="Once upon a time")) == "Once upon a time"
    assert prompt_text({"prompt": ["a", "b"]}).startswith("a") and "b" in prompt_text({"prompt": ["a", "b"]})
    ids = prompt_text(CompletionRequest(model="m", prompt=[1, 2, 3, 4]))
    assert ids == repr([1, 2, 3, 4]) and prompt_text({"prompt": [1, 2, 3, 4, 5]}).startswith(ids[:-1])
    assert prompt_text({"prompt": [[1, 2], [3]]}) == repr([[1, 2], [3]])


def test_responses_input_and_instructions():
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

    plain = prompt_text(ResponsesRequest(model="m", input="hello", instructions="be nice"))
    assert plain.index("be nice") < plain.index("hello")
    items = prompt_text(ResponsesRequest(model="m", instructions="be nice", input=[
        {"role": "user", "content": "hey"},
        {"role": "user", "content": [{"type": "input_text", "text": "yo"}]},
        {"type": "function_call_output", "call_id": "c9", "output": "42"}]))
    assert items.index("be nice") < items.index("hey") < items.index("yo") < items.index("42")
    assert prompt_text({"input": "hello"}) != prompt_text({"input": "hello", "instructions": "x"})


@pytest.mark.parametrize("body", [None, 3, "text", object(), {"messages": 5}, {"messages": [None, 1, "x"]},
                                  {"prompt": object()}, {"input": [object()]}, {"messages": [{"role": "user",
                                  "content": {"deep": [[[[[[[[[[["x"]]]]]]]]]]]}}]}])
def test_prompt_text_never_raises(body):
    assert isinstance(prompt_text(body), str)


def test_prompt_text_survives_a_raising_attribute():
    class Hostile:
        @property
        def messages(self):
            raise RuntimeError("boom")

    assert prompt_text(Hostile()) == ""


# prefix_hashes


def test_hashes_cover_full_blocks_only_and_chain():
    text = "abcdefgh" * 10  # 80 characters
    hashes = prefix_hashes(text, 16)
    assert len(hashes) == 5 and len(prefix_hashes(text[:79], 16)) == 4 and prefix_hashes("short", 16) == []
    assert prefix_hashes(text + "tail", 16) == hashes
    # Block 2 alone is the same text as block 0, but its hash covers the whole prefix.
    assert len(set(hashes)) == 5
    changed_first = prefix_hashes("X" + text[1:], 16)
    assert all(a != b for a, b in zip(hashes, changed_first))
    changed_last = prefix_hashes(text[:-1] + "X", 16)
    assert changed_last[:4] == hashes[:4] and changed_last[4] != hashes[4]
    assert all(0 <= h < 2**64 for h in hashes)


def test_salt_separates_adapters():
    assert set(prefix_hashes(SYSTEM, 64, salt="lora-a")).isdisjoint(prefix_hashes(SYSTEM, 64))
    assert prefix_hashes(SYSTEM, 64, salt="lora-a") == prefix_hashes(SYSTEM, 64, salt="lora-a")


def test_hashes_are_the_same_in_another_process():
    code = ("from serve_app.routing.prefix_affinity import prefix_hashes;"
            "print(prefix_hashes('h\\u00e9llo w\\u00f6rld ' * 40, 32, salt='s'))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout.strip()
    assert other == repr(prefix_hashes("h\u00e9llo w\u00f6rld " * 40, 32, salt="s"))


def test_hashes_survive_lone_surrogates():
    assert len(prefix_hashes("\ud800" * 40, 16)) == 2


# PrefixIndex


def test_index_matches_the_longest_prefix_per_replica():
    index = PrefixIndex(1000)
    a = prefix_hashes(prompt_text(chat("turn one", "reply", "turn two")), 64)
    b = prefix_hashes(prompt_text(chat("another question")), 64)
    index.record(a, "r1")
    index.record(b, "r2")
    matches = index.match(prefix_hashes(prompt_text(chat("turn one", "reply", "turn two", "r", "three")), 64))
    shared_system = len(prefix_hashes(prompt_text(chat()), 64))
    assert matches["r1"] == len(a) and shared_system <= matches["r2"] < len(a)
    assert index.match(prefix_hashes("nothing like it" * 20, 64)) == {}
    assert index.match([]) == {}


def test_index_match_needs_contiguous_blocks():
    index = PrefixIndex(100)
    index.record([1, 2, 3], "r1")
    index.record([7, 2, 3], "r2")  # hash 2 under another first block (impossible with chained hashes; still safe)
    assert index.match([1, 2, 3, 4]) == {"r1": 3}


def test_index_is_bounded_and_forgets_the_tail_first():
    index = PrefixIndex(5)
    index.record([1, 2, 3], "r1")
    index.record([10, 11, 12], "r2")
    assert len(index) == 5
    assert index.match([1, 2, 3]) == {"r1": 2}  # 3, the oldest tail block, went first
    assert index.match([10, 11, 12]) == {"r2": 3}
    index.record([1, 2], "r1")  # refreshes 1 and 2: the r2 tail goes next
    index.record([20], "r3")
    assert index.match([1, 2]) == {"r1": 2} and index.match([10, 11, 12]) == {"r2": 2}


def test_forget_replica():
    index = PrefixIndex(100)
    index.record([1, 2], "r1")
    index.record([1, 2, 3], "r2")
    index.forget_replica("r2")
    assert index.match([1, 2, 3]) == {"r1": 2} and len(index) == 2
    index.forget_replicas(["r1", "unknown"])
    assert len(index) == 0


# decide_replica / choose_replica


def test_prefix_hit_within_the_load_bound():
    decision = decide_replica({"a": 3, "b": 1}, {"a": 6, "b": 2, "c": 2}, max_load_gap=4, rng=random.Random(0))
    assert (decision.replica_id, decision.reason, decision.matched_blocks) == ("a", RoutingReason.PREFIX_HIT, 3)


def test_load_bound_exceeded_falls_back_to_power_of_two():
    loads = {"a": 7, "b": 2, "c": 2}
    for seed in range(20):
        decision = decide_replica({"a": 3}, loads, max_load_gap=4, rng=random.Random(seed))
        assert decision.reason is RoutingReason.LOAD_FALLBACK and decision.replica_id in ("b", "c")


def test_shorter_match_within_the_bound_beats_pow2():
    decision = decide_replica({"a": 9, "b": 2}, {"a": 9, "b": 1, "c": 0}, max_load_gap=2, rng=random.Random(0))
    assert (decision.replica_id, decision.reason) == ("b", RoutingReason.PREFIX_HIT)


def test_no_match_picks_the_less_loaded_of_two():
    loads = {"a": 5, "b": 1, "c": 9}
    for seed in range(30):
        rng = random.Random(seed)
        first, second = random.Random(seed).sample(list(loads), 2)
        decision = decide_replica({}, loads, max_load_gap=4, rng=rng)
        assert decision.reason is RoutingReason.NO_MATCH
        assert decision.replica_id == min((first, second), key=loads.get)
    assert choose_replica({"gone": 5}, {"a": 0}, 0, random.Random(0)) == "a"  # matches outside the candidates


def test_ties_go_to_the_lower_load_then_the_rng():
    assert choose_replica({"a": 4, "b": 4}, {"a": 3, "b": 1}, 4, random.Random(0)) == "b"
    picks = {choose_replica({"a": 4, "b": 4}, {"a": 1, "b": 1}, 4, random.Random(seed)) for seed in range(20)}
    assert picks == {"a", "b"}
    assert power_of_two_choices({"a": 2, "b": 2}, random.Random(1)) in ("a", "b")


def test_slot_aware_never_queues_behind_a_full_engine_while_another_has_a_free_row():
    # The bursty replay's fault: with 8 rows per engine, a prefix holder within the load gap, or two replicas
    # drawn at random, can be full while another replica has free rows; the request then waits in an engine queue.
    loads = {"a": 8, "b": 8, "c": 5, "d": 9}
    for seed in range(30):
        rng = random.Random(seed)
        assert decide_replica({}, loads, 4, rng, slots=8).replica_id == "c"
        prefix = decide_replica({"a": 6}, loads, 4, rng, slots=8)
        assert (prefix.replica_id, prefix.reason) == ("c", RoutingReason.LOAD_FALLBACK)
    # A prefix holder with a free row still wins within the gap; the least loaded otherwise, ties by the rng.
    assert decide_replica({"b": 3}, {"a": 2, "b": 6}, 4, random.Random(0), slots=8).replica_id == "b"
    assert {decide_replica({}, {"a": 2, "b": 2, "c": 7}, 4, random.Random(seed), slots=8).replica_id
            for seed in range(20)} == {"a", "b"}
    # Every engine full: join the shortest queue (a prefix holder within the gap still first).
    assert decide_replica({}, {"a": 12, "b": 9, "c": 10}, 4, random.Random(0), slots=8).replica_id == "b"
    assert decide_replica({"c": 2}, {"a": 12, "b": 9, "c": 10}, 4, random.Random(0), slots=8).replica_id == "c"


def test_decisions_are_deterministic_given_the_rng():
    loads = {f"r{i}": i % 3 for i in range(8)}
    run = [choose_replica({}, loads, 1, rng) for rng in [random.Random(7)] for _ in range(50)]
    again = [choose_replica({}, loads, 1, rng) for rng in [random.Random(7)] for _ in range(50)]
    assert run == again and len(set(run)) > 2


def test_zero_gap_and_single_replica():
    assert choose_replica({"a": 1}, {"a": 1, "b": 0}, 0, random.Random(0)) == "b"
    assert choose_replica({"a": 1}, {"a": 0, "b": 0}, 0, random.Random(0)) == "a"
    assert choose_replica({}, {"only": 100}, 0, random.Random(0)) == "only"
    with pytest.raises(ValueError):
        choose_replica({}, {}, 0, random.Random(0))


# The Ray Serve router, against fake replicas (no Ray cluster: the base class needs only an event loop)


@dataclass
class ServerRequestStub:
    body: object


class FakeReplica:
    def __init__(self, name, deployment_id, max_ongoing_requests=8, queue_len=0, model_ids=()):
        from ray.serve.request_router import ReplicaID

        self.replica_id = ReplicaID(name, deployment_id)
        self.max_ongoing_requests = max_ongoing_requests
        self.multiplexed_model_ids = set(model_ids)
        self.node_id = "node"
        self.availability_zone = None
        self.queue_len = queue_len

    async def get_queue_len(self, *, deadline_s):
        return self.queue_len


def make_router(replicas_spec, **kwargs):
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    from serve_app.routing.ray_router import PrefixAffinityRouter

    deployment_id = DeploymentID(name="model", app_name="app")
    router = PrefixAffinityRouter(deployment_id=deployment_id, handle_source=DeploymentHandleSource.UNKNOWN,
                                  use_replica_queue_len_cache=True)
    router.initialize_state(block_chars=64, max_load_gap=2, max_tracked_blocks=10_000, seed=0, **kwargs)
    replicas = [FakeReplica(name, deployment_id, **spec) for name, spec in replicas_spec.items()]
    router.update_replicas(replicas)
    return router, {r.replica_id.unique_id: r for r in replicas}


def pending(body, model_id="", internal_id="internal"):
    from ray.serve._private.common import RequestMetadata
    from ray.serve.request_router import PendingRequest

    metadata = RequestMetadata(request_id="req", internal_request_id=internal_id, multiplexed_model_id=model_id)
    return PendingRequest(args=[ServerRequestStub(body)], kwargs={}, metadata=metadata)


async def choose_and_record(router, request):
    """One routing step as Serve's router does it: choose, send, and (the replica accepted) record."""
    ranks = await router.choose_replicas(router._replicas_list, request)
    chosen = ranks[0][0]
    router.on_send_request(chosen.replica_id)
    router.on_request_routed(request, chosen.replica_id, None)
    return chosen.replica_id.unique_id, ranks


def finish(router, replica):
    """A request to `replica` ended: Serve's router calls both hooks."""
    router.on_request_completed(replica.replica_id, "internal")
    router.decrement_queue_len_cache(replica.replica_id)


def test_a_burst_chosen_before_any_send_spreads_over_the_free_rows():
    """Ray's routing task fulfils a burst's requests back to back, before any send updates the load cache: each
    choice must count the ones before it, or the whole burst goes to the replica that looked least loaded."""
    async def scenario():
        router, replicas = make_router({"r1": {"queue_len": 3}, "r2": {"queue_len": 5}, "r3": {"queue_len": 5}},
                                       slots=8)
        await asyncio.sleep(0.05)  # the base class probes new replicas' queue lengths in a task
        burst = [pending(chat(f"user {i}"), internal_id=f"burst-{i}") for i in range(9)]
        chosen = [(await router.choose_replicas(router._replicas_list, request))[0][0].replica_id.unique_id
                  for request in burst]
        ends_at = {name: replica.queue_len + chosen.count(name) for name, replica in replicas.items()}
        # 3 + 5 + 5 in flight and 9 more, 24 rows: every replica ends at its 8 rows or under.
        assert max(ends_at.values()) <= 8, chosen
        # Sent: the cache counts them now and the unsent choices are forgotten (no double count).
        for request, name in zip(burst, chosen):
            router.on_send_request(replicas[name].replica_id)
        assert router._unsent_choices() == {}
        assert {name: router.replica_load(r) for name, r in replicas.items()} == ends_at

    asyncio.run(scenario())


def test_an_unsent_choice_stops_counting_after_its_ttl(monkeypatch):
    from serve_app.routing import ray_router

    async def scenario():
        router, replicas = make_router({"r1": {}, "r2": {}}, slots=8)
        await asyncio.sleep(0.05)
        await router.choose_replicas(router._replicas_list, pending(chat("x"), internal_id="lost"))
        assert sum(router._unsent_choices().values()) == 1
        monkeypatch.setattr(ray_router, "UNSENT_CHOICE_TTL_S", 0.0)
        assert sum(router._unsent_choices().values()) == 0

    asyncio.run(scenario())


def test_router_sends_a_conversation_back_to_its_replica():
    async def scenario():
        router, replicas = make_router({"r1": {}, "r2": {}, "r3": {}})
        await asyncio.sleep(0)  # the base class probes new replicas' queue lengths in a task
        first, ranks = await choose_and_record(router, pending(chat("Where is my parcel?")))
        assert [len(rank) for rank in ranks] == [1, 2]
        for _ in range(5):
            later, _ = await choose_and_record(router, pending(chat("Where is my parcel?", "On its way.", "When?")))
            finish(router, replicas[later])
            assert later == first
        assert router.decision_counts[RoutingReason.PREFIX_HIT] == 5
        assert router.decision_counts[RoutingReason.NO_MATCH] == 1

    asyncio.run(scenario())


def test_router_falls_back_when_the_prefix_replica_is_loaded():
    async def scenario():
        router, replicas = make_router({"r1": {}, "r2": {}})
        await asyncio.sleep(0)
        first, _ = await choose_and_record(router, pending(chat("question")))
        for _ in range(3):  # three more in flight there: over the gap of 2
            router.on_send_request(replicas[first].replica_id)
        assert router.replica_load(replicas[first]) == 4
        chosen, _ = await choose_and_record(router, pending(chat("question")))
        assert chosen != first and router.decision_counts[RoutingReason.LOAD_FALLBACK] == 1

    asyncio.run(scenario())


def test_router_load_falls_back_to_its_own_count_without_the_cache():
    async def scenario():
        router, replicas = make_router({"r1": {}, "r2": {}})
        await asyncio.sleep(0)
        replica = replicas["r1"]
        router._replica_queue_len_cache.invalidate_key(replica.replica_id)
        router.on_send_request(replica.replica_id)  # the cache entry restarts at 1 here
        router._replica_queue_len_cache.invalidate_key(replica.replica_id)
        router.on_send_request(replica.replica_id)
        router._replica_queue_len_cache.invalidate_key(replica.replica_id)
        assert router.replica_load(replica) == 2
        router.on_request_completed(replica.replica_id, "x")
        assert router.replica_load(replica) == 1

    asyncio.run(scenario())


def test_router_skips_full_replicas_and_requests_without_a_body():
    async def scenario():
        router, replicas = make_router({"r1": {"max_ongoing_requests": 1}, "r2": {}})
        await asyncio.sleep(0)
        router.on_send_request(replicas["r1"].replica_id)  # r1 is now full
        for _ in range(10):
            ranks = await router.choose_replicas(router._replicas_list, pending(chat("x")))
            assert ranks[0][0].replica_id.unique_id == "r2"
        from ray.serve._private.common import RequestMetadata
        from ray.serve.request_router import PendingRequest

        bare = PendingRequest(args=[], kwargs={}, metadata=RequestMetadata(request_id="a", internal_request_id="b"))
        assert router.request_hashes(bare) == [] and router.request_hashes(None) == []
        assert (await router.choose_replicas(router._replicas_list, bare))[0][0].replica_id.unique_id == "r2"

    asyncio.run(scenario())


def test_router_prefers_replicas_with_the_adapter_and_salts_by_it():
    async def scenario():
        router, _ = make_router({"r1": {}, "r2": {"model_ids": ["lora-a"]}})
        await asyncio.sleep(0)
        for _ in range(5):
            chosen, _ = await choose_and_record(router, pending(chat("hi"), model_id="lora-a"))
            assert chosen == "r2"
        assert router.request_hashes(pending(chat("hi"), "lora-a")) != router.request_hashes(pending(chat("hi")))

    asyncio.run(scenario())


def test_router_forgets_removed_replicas():
    async def scenario():
        router, replicas = make_router({"r1": {}, "r2": {}})
        await asyncio.sleep(0)
        first, _ = await choose_and_record(router, pending(chat("hello")))
        assert len(router.index) > 0
        router.update_replicas([r for name, r in replicas.items() if name != first])
        assert len(router.index) == 0
        router.on_replica_actor_died(next(r for n, r in replicas.items() if n != first).replica_id)
        assert await router.choose_replicas(router._replicas_list, pending(chat("hello"))) == []

    asyncio.run(scenario())


def test_request_router_options():
    from ray.serve.config import RequestRouterConfig

    assert request_router_options_of(PrefixRoutingConfig(enabled=False)) == {}
    options = request_router_options_of(PrefixRoutingConfig(block_chars=128, max_load_gap=3, max_tracked_blocks=99),
                                        slots=8)
    config = options["request_router_config"]
    assert isinstance(config, RequestRouterConfig) and list(options) == ["request_router_config"]
    assert config.request_router_class == "serve_app.routing.ray_router.PrefixAffinityRouter"
    assert config.request_router_kwargs == {"block_chars": 128, "max_load_gap": 3, "max_tracked_blocks": 99,
                                            "slots": 8}
    assert config.get_request_router_class().__name__ == "PrefixAffinityRouter"


def request_router_options_of(prefix_routing, slots=None):
    from serve_app.routing.ray_router import request_router_options

    return request_router_options(prefix_routing, slots)


def test_router_class_unpickles_in_a_fresh_process(tmp_path):
    """Serve cloudpickles the router class by value into the deployment config; a caller process loads it."""
    config = request_router_options_of(PrefixRoutingConfig())["request_router_config"]
    path = tmp_path / "router.pkl"
    path.write_bytes(config.get_serialized_request_router_cls())
    code = (f"import cloudpickle; cls = cloudpickle.loads(open({str(path)!r}, 'rb').read());"
            "print(cls.__name__, [b.__name__ for b in cls.__mro__[1:4]])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "PrefixAffinityRouter" and "MultiplexMixin" in out


def test_pure_module_does_not_import_ray():
    code = "import sys, serve_app.routing.prefix_affinity; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
