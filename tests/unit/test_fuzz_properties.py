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


_KEYS = st.sampled_from(["content", "text", "reasoning", "role", "logprobs", "finish_reason", "stop_reason",
                         "tool_calls", "index", "a", "token_ids"])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8),
                     st.sampled_from(['","x":null', '"content":"', '\\":null', "null", "{", "}", ", ", '"text":"a']))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=12)


@FUZZ
@given(choices=st.lists(st.dictionaries(_KEYS, _JSON, max_size=5), max_size=2),
       extra=st.dictionaries(_KEYS, _JSON, max_size=2))
def test_a_chunk_forwarded_as_text_is_byte_for_byte_what_re_serializing_sends(choices, extra):
    """Null fields cut as text (issue 25 item 6) give exactly the bytes of parse, drop nulls, re-serialize; where
    the text path cannot be sure it declines."""
    from serve_app.api.framing import sse_event
    from serve_app.server.response_stream import drop_nulls, without_null_fields

    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": choices, **extra}
    event = "data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")) + "\n\n"
    forwarded = without_null_fields(event)
    if forwarded is not None:
        assert forwarded == sse_event(drop_nulls(chunk))


def test_real_vllm_chunks_are_forwarded_as_text_without_their_nulls():
    from serve_app.server.response_stream import without_null_fields

    chat = ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
            '"delta":{"content":" hi"},"logprobs":null,"finish_reason":null}]}\n\n')
    expected = ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
                '"choices":[{"index":0,"delta":{"content":" hi"}}]}\n\n')
    assert without_null_fields(chat) == expected
    assert StreamReframer("sse").reframe(chat) == (expected, None, True)
    assert without_null_fields(chat.replace(" hi", 'say \\"x\\":null')) is None  # a string holding `":null`
