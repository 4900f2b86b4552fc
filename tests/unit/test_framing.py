import json

import msgpack

from serve_app.framing import SSE_DONE, ChunkBuilder, choose_wire_format, done_marker, encode, sse_event


def parse_sse(stream: str):
    events = [e for e in stream.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


def test_chat_chunks_are_compact_and_openai_shaped():
    b = ChunkBuilder("req-1", "m", 123, "chat")
    first = b.text("Hi", first=True)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"content": "Hi", "role": "assistant"}
    assert "finish_reason" not in first["choices"][0], "null fields are not sent"
    event = sse_event(first)
    assert event.startswith("data: {") and event.endswith("}\n\n") and ", " not in event
    last = b.text("", finish_reason="stop")
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


def test_usage_chunk_has_empty_choices_and_timings_extension():
    b = ChunkBuilder("req-1", "m", 1, "completion")
    usage = b.usage(5, 7, {"queue_ms": 1.234567})
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert usage["timings"] == {"queue_ms": 1.23}


def test_sse_stream_ends_with_done_and_round_trips():
    b = ChunkBuilder("r", "m", 1, "completion")
    stream = encode(b.text("a", first=True), "sse") + encode(b.text("b", finish_reason="length"), "sse") + done_marker("sse")
    data = parse_sse(stream)
    assert data[-1] == "[DONE]" and stream.endswith(SSE_DONE)
    assert [json.loads(d)["choices"][0]["text"] for d in data[:-1]] == ["a", "b"]


def test_msgpack_stream_round_trips():
    b = ChunkBuilder("r", "m", 1, "chat")
    stream = encode(b.text("é", first=True), "msgpack") + done_marker("msgpack")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(stream)
    objs = list(unpacker)
    assert objs[0]["choices"][0]["delta"]["content"] == "é" and objs[-1] == {"done": True}


def test_content_negotiation():
    assert choose_wire_format(None) == "sse"
    assert choose_wire_format("text/event-stream") == "sse"
    assert choose_wire_format("application/x-msgpack") == "msgpack"


def test_full_response():
    body = ChunkBuilder("r", "m", 1, "chat").full_response("Paris", "stop", 3, 2)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert body["usage"]["total_tokens"] == 5


def test_whole_json_bodies_are_gzipped_only_when_accepted_and_worth_it():
    import gzip

    from serve_app.framing import maybe_gzip

    body = json.dumps({"text": "Paris " * 200}).encode()
    packed, headers = maybe_gzip(body, "gzip, deflate")
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(packed) == body and len(packed) < len(body) / 5
    assert maybe_gzip(body, None) == (body, {})
    assert maybe_gzip(body, "identity") == (body, {})
    assert maybe_gzip(b"{}", "gzip") == (b"{}", {})
