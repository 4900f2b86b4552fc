"""Property tests (hypothesis) of the streaming-response component on arbitrary text and bytes.

Detokenization and stop strings are vLLM's own now (its frontend runs in the model server); what serve_app
still does to every frame is re-framing vLLM's SSE chunks, so that is what is fuzzed here.
"""

from __future__ import annotations

import json

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.server.response_stream import StreamReframer, parse_sse_event

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _vllm_chunk(piece: str, endpoint: str, finish: str | None) -> str:
    choice = {"index": 0, "logprobs": None, "finish_reason": finish}
    if endpoint == "chat":
        choice["delta"] = {"content": piece}
    else:
        choice["text"] = piece
    # vLLM writes its chunks with pydantic's JSON (non-ASCII kept as is, nulls included).
    return "data: " + json.dumps({"id": "x", "object": "chunk", "created": 1, "model": "m", "choices": [choice]},
                                 ensure_ascii=False, separators=(",", ":")) + "\n\n"


@FUZZ
@given(pieces=st.lists(st.text(max_size=12), max_size=20), wire=st.sampled_from(["sse", "msgpack"]),
       endpoint=st.sampled_from(["chat", "completion"]))
def test_reframed_stream_parses_back_to_the_text(pieces, wire, endpoint):
    reframer = StreamReframer(wire)
    events = [_vllm_chunk(p, endpoint, "length" if i == len(pieces) - 1 else None) for i, p in enumerate(pieces)]
    stream = [reframer.reframe(e)[0] for e in events + ["data: [DONE]\n\n"]]
    objects = _parse(stream, wire)
    assert objects[-1] == "DONE"
    key = (lambda c: c["choices"][0].get("delta", {}).get("content", "")) if endpoint == "chat" else (
        lambda c: c["choices"][0].get("text", ""))
    assert "".join(key(o) for o in objects[:-1]) == "".join(pieces)


@FUZZ
@given(raw=st.text(max_size=200))
def test_arbitrary_event_text_never_crashes_the_parser_with_anything_but_a_json_error(raw):
    try:
        parse_sse_event(raw)
    except json.JSONDecodeError:
        pass  # vLLM only ever sends JSON data lines; a broken one is a bug to surface, not to hide


def _parse(stream: list, wire: str) -> list:
    if wire == "sse":
        body = "".join(stream)
        events = [e for e in body.split("\n\n") if e]
        assert all(e.startswith("data: ") and "\n" not in e for e in events), "an event must be one line"
        return ["DONE" if e == "data: [DONE]" else json.loads(e[len("data: "):]) for e in events]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(b"".join(stream))
    return ["DONE" if o == {"done": True} else o for o in unpacker]
