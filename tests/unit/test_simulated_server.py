"""SimulatedModelServer driven directly: the model server's streaming contract with a simulated engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import msgpack
import pytest

from serve_app.config import AppConfig
from serve_app.server.model_server import ServerRequest, WholeResponse
from serve_app.server.response_stream import Frame, parse_sse_event
from serve_app.server.simulated.server import SimulatedModelServer

# A fast profile: a request waits 5 ms (its frontend), a 32-token prompt prefills in 10 + 32 * 0.5 = 26 ms, each
# later token takes 10 + 1 ms alone.
PROFILE = """
name: fast
model: m
device: d
load_time_s: 0.2
frontend_ms: 5
max_num_seqs: 4
max_num_batched_tokens: 256
num_kv_cache_tokens: 4096
block_size_tokens: 16
max_model_len: 1024
default_max_tokens: 7
cost: {step_base_ms: 10, decode_ms_per_seq: 1, prefill_ms_per_token: 0.5}
sources: {all: test numbers}
"""


@pytest.fixture
def config(tmp_path) -> AppConfig:
    path = tmp_path / "fast.yaml"
    path.write_text(PROFILE)
    # A source with no folder on disk: prompts are counted as 4 characters a token.
    return AppConfig.model_validate({"model": {"source": str(tmp_path / "none"), "served_model_name": "sim"},
                                     "engine": {"backend": "simulated", "simulated": {"profile": str(path)}}})


def chat(max_tokens: int | None = 5, stream: bool = True, **extra) -> dict:
    body = {"model": "sim", "messages": [{"role": "user", "content": "x" * 100}], "stream": stream, **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def started(config: AppConfig) -> SimulatedModelServer:
    server = SimulatedModelServer(config)
    await server.start()
    return server


async def collect(server, request) -> list:
    return [item async for item in server.generate(request)]


def test_start_takes_the_profile_load_time(config):
    async def main():
        server = SimulatedModelServer(config)
        start_s = time.monotonic()
        await server.start()
        elapsed_s = time.monotonic() - start_s
        server.shutdown()
        return elapsed_s

    assert 0.19 <= asyncio.run(main()) < 1.0


def test_a_chat_stream_is_vllm_shaped_sse_with_usage_timings_and_done(config):
    async def main():
        server = await started(config)
        items = await collect(server, ServerRequest("chat", chat(stream_options={"include_usage": True}), "r1"))
        server.shutdown()
        return items

    items = asyncio.run(main())
    assert all(isinstance(item, Frame) for item in items)
    events = [parse_sse_event(item.data)[1] for item in items]
    assert events[-1] is None and items[-1].is_final and items[-1].data == "data: [DONE]\n\n"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    token_events = [e for e in events[1:-2]]
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == "chatcmpl-r1" for e in token_events)
    assert "".join(e["choices"][0]["delta"]["content"] for e in token_events).split() and len(token_events) == 5
    assert token_events[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(item.num_tokens for item in items) == 5
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["prompt_tokens"] > 0
    outcome = items[-1].outcome
    timings = outcome.timings_ms
    assert outcome.num_output_tokens == 5 and outcome.num_prompt_tokens == usage_chunk["usage"]["prompt_tokens"]
    assert set(usage_chunk["timings"]) == set(timings)
    # TTFT from the profile: 5 ms, then 10 ms + 0.5 ms per prompt token, plus the event loop's lateness, which on
    # a busy 2-core machine can reach tens of ms (the bound still fails a prefill charged per character, +37 ms).
    expected_prefill_ms = 10 + 0.5 * usage_chunk["usage"]["prompt_tokens"]
    assert expected_prefill_ms - 0.01 <= timings["prefill_ms"] < expected_prefill_ms + 30
    assert 5 <= timings["frontend_ms"] < 5 + 40
    assert 5 + expected_prefill_ms <= timings["ttft_ms"] < 5 + expected_prefill_ms + 70
    assert timings["decode_ms"] >= 4 * 11 - 0.01  # four decode steps of 10 + 1 ms


def test_a_completion_stream_in_msgpack(config):
    async def main():
        server = await started(config)
        body = {"model": "sim", "prompt": "hello world", "max_tokens": 3, "stream": True}
        items = await collect(server, ServerRequest("completion", body, "r2", wire="msgpack"))
        server.shutdown()
        return items

    items = asyncio.run(main())
    decoded = [msgpack.unpackb(item.data) for item in items]
    assert decoded[-1] == {"done": True}
    assert [d["object"] for d in decoded[:-1]] == ["text_completion"] * 3
    assert "".join(d["choices"][0]["text"] for d in decoded[:-1]).count(" ") == 3


def test_a_whole_response_carries_usage_timings_and_the_default_length(config):
    async def main():
        server = await started(config)
        [whole] = await collect(server, ServerRequest("chat", chat(max_tokens=None, stream=False), "r3"))
        server.shutdown()
        return whole

    whole = asyncio.run(main())
    assert isinstance(whole, WholeResponse) and whole.status_code == 200
    assert whole.body["object"] == "chat.completion"
    assert whole.body["usage"]["completion_tokens"] == 7  # the profile's default_max_tokens
    assert len(whole.body["choices"][0]["message"]["content"].split()) == 7
    assert whole.body["timings"]["ttft_ms"] > 0


def test_a_request_longer_than_max_model_len_gets_a_400_before_any_frame(config):
    async def main():
        server = await started(config)
        items = await collect(server, ServerRequest("chat", chat(max_tokens=5000), "r4"))
        server.shutdown()
        return items

    [whole] = asyncio.run(main())
    assert whole.status_code == 400 and whole.body["error"]["code"] == "context_length_exceeded"


def test_a_pydantic_body_is_accepted_like_a_dict(config):
    class Body:
        def model_dump(self):
            return chat(max_tokens=2, stream=False)

    async def main():
        server = await started(config)
        [whole] = await collect(server, ServerRequest("chat", Body(), "r5"))
        server.shutdown()
        return whole

    assert asyncio.run(main()).body["usage"]["completion_tokens"] == 2


def test_closing_a_stream_early_aborts_it_and_the_engine_drains_to_zero(config):
    async def main():
        server = await started(config)
        streams = [server.generate(ServerRequest("chat", chat(max_tokens=500), f"a{i}")) for i in range(6)]
        for stream in streams[:4]:
            await stream.__anext__()  # the role chunk: the batch (max_num_seqs 4) is full
        queued = [asyncio.ensure_future(stream.__anext__()) for stream in streams[4:]]
        await asyncio.sleep(0.05)
        busy = server.engine_stats()
        for task in queued:  # a client gone while its request waits
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        await asyncio.sleep(0.05)
        idle = server.engine_stats()
        server.shutdown()
        return busy, idle

    busy, idle = asyncio.run(main())
    assert busy.num_running == 4 and busy.num_waiting == 2 and busy.num_active_streams == 6
    assert idle.num_running == idle.num_waiting == idle.num_unfinished == idle.num_active_streams == 0
    assert idle.is_healthy


def test_concurrent_streams_finish_and_feed_the_autoscaling_window(config):
    async def main():
        server = await started(config)
        results = await asyncio.gather(*(collect(server, ServerRequest("chat", chat(max_tokens=4), f"c{i}"))
                                         for i in range(8)))
        stats = server.autoscaling_stats()
        server.shutdown()
        return results, stats

    results, stats = asyncio.run(main())
    assert all(items[-1].is_final and sum(i.num_tokens for i in items) == 4 for items in results)
    assert stats["num_ttft_samples"] == 8 and stats["num_running"] == 0 and stats["ttft_p99_ms"] > 0


def test_a_repeated_prompt_hits_the_prefix_cache(config):
    async def main():
        server = await started(config)
        for i in range(2):
            await collect(server, ServerRequest("chat", chat(max_tokens=1, stream=False), f"p{i}"))
        stats = server.engine_stats()
        server.shutdown()
        return stats

    stats = asyncio.run(main())
    assert 0 < stats.prefix_cache_hits < stats.prefix_cache_queries


def test_the_simulated_engine_imports_neither_vllm_nor_torch():
    code = ("import sys; import serve_app.server.simulated.server, serve_app.server.factory; "
            "print('vllm' in sys.modules or 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_example_cluster_config_is_a_valid_simulated_app():
    from pathlib import Path

    import yaml

    from serve_app.server.simulated.profile import load_profile

    path = Path(__file__).resolve().parents[2] / "cluster/serve-config-simulated.yaml"
    [app] = yaml.safe_load(path.read_text())["applications"]
    config = AppConfig.model_validate(app["args"])
    assert config.engine.backend == "simulated" and config.ingress_placement == "separate"
    assert load_profile(config.engine.simulated.profile).max_model_len >= config.engine.max_model_len


def test_config_overrides_replace_the_profile_numbers(tmp_path):
    path = tmp_path / "fast.yaml"
    path.write_text(PROFILE)
    config = AppConfig.model_validate({
        "model": {"source": str(tmp_path / "none")},
        "engine": {"backend": "simulated", "simulated": {"profile": str(path), "max_num_seqs": 2, "load_time_s": 0,
                                                         "step_time_scale": 2.0, "default_max_tokens": 3}}})

    async def main():
        server = await started(config)
        [whole] = await collect(server, ServerRequest("completion", {"prompt": "x" * 128}, "o1"))
        streams = [server.generate(ServerRequest("chat", chat(max_tokens=100), f"o{i}")) for i in range(2)]
        for stream in streams:
            await stream.__anext__()
        queued = asyncio.ensure_future(server.generate(ServerRequest("chat", chat(max_tokens=100), "o3")).__anext__())
        await asyncio.sleep(0.05)
        stats = server.engine_stats()
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        server.shutdown()
        return whole, stats

    whole, stats = asyncio.run(main())
    assert whole.body["usage"]["completion_tokens"] == 3
    # 32 prompt tokens (4 characters each): (10 + 0.5 * 32) ms, twice as slow.
    assert whole.body["timings"]["prefill_ms"] == pytest.approx(2 * (10 + 0.5 * 32), abs=0.1)
    assert stats.num_running == 2 and stats.num_waiting == 1


def test_a_body_with_wrong_field_types_gets_a_400_not_a_crash(config):
    """The ingress checks the JSON's shape; field types are the model server's to refuse (vLLM's types do it for
    the real engine), with a 400 before the first byte rather than a crashed request."""
    async def main():
        server = await started(config)
        bad_messages = await collect(server, ServerRequest("chat", {"messages": "nope", "max_tokens": 2}, "r9"))
        bad_length = await collect(server, ServerRequest("chat", chat(max_tokens="5"), "r10"))
        server.shutdown()
        return bad_messages, bad_length

    [bad_messages], [bad_length] = asyncio.run(main())
    assert bad_messages.status_code == 400 and bad_messages.body["error"]["param"] == "messages"
    assert bad_length.status_code == 400 and bad_length.body["error"]["param"] == "max_tokens"
