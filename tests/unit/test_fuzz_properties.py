"""Property-based fuzzing (hypothesis) of the per-token text path: detokenizer, stop strings, framing.

Whatever the engine emits and however it is chunked, the client must get exactly the decoded text,
never a partial character or a partial stop string, in frames any SSE or msgpack reader can parse.
"""

from __future__ import annotations

import json

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from serve_app.detokenizer import IncrementalDetokenizer
from serve_app.framing import ChunkBuilder, done_marker, encode
from serve_app.protocol import GenerationRequest, SamplingOptions, TokenChunk
from serve_app.stop_strings import StopStringMatcher
from serve_app.streaming import ResponseState

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class ByteTokenizer:
    """One token per UTF-8 byte (ids 0-255): multi-byte characters always span tokens."""

    def decode(self, token_ids, skip_special_tokens=True):
        return bytes(token_ids).decode("utf-8", errors="replace")


def _chunks(items: list, sizes: list[int]) -> list[list]:
    out, i = [], 0
    for size in sizes:
        if i >= len(items):
            break
        out.append(items[i : i + size])
        i += size
    if i < len(items):
        out.append(items[i:])
    return out


chunk_sizes = st.lists(st.integers(min_value=1, max_value=8), max_size=64)


@FUZZ
@given(text=st.text(max_size=60), sizes=chunk_sizes)
def test_detokenizer_emits_exactly_the_text_in_any_chunking(text, sizes):
    ids = list(text.encode("utf-8"))
    detok = IncrementalDetokenizer(ByteTokenizer())
    pieces = [detok.push(chunk) for chunk in _chunks(ids, sizes)] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


@FUZZ
@given(raw=st.lists(st.integers(min_value=0, max_value=255), max_size=80), sizes=chunk_sizes)
def test_detokenizer_never_crashes_on_arbitrary_bytes(raw, sizes):
    detok = IncrementalDetokenizer(ByteTokenizer())
    out = "".join(detok.push(chunk) for chunk in _chunks(raw, sizes)) + detok.flush()
    # Invalid UTF-8 becomes replacement characters; valid bytes are never lost.
    assert out == bytes(raw).decode("utf-8", errors="replace") or out.replace("\ufffd", "") == bytes(raw).decode(
        "utf-8", errors="ignore"
    )


alphabet = st.sampled_from("abc\n🙂é ")


@FUZZ
@given(text=st.text(alphabet, max_size=40), stops=st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=3),
       sizes=chunk_sizes)
@example(text=" aa", stops=["a", " aa"], sizes=[1, 1])  # found by a CI run: the stop completing first wins
@example(text=" aa", stops=["a", " aa"], sizes=[3])
def test_stop_strings_cut_at_first_match_and_never_leak(text, stops, sizes):
    matcher = StopStringMatcher(stops)
    sent = ""
    for piece in _chunks(list(text), sizes):
        sent += matcher.push("".join(piece))
        if matcher.stopped:
            break
    sent += matcher.flush()
    # A stream stops at the first chunk after which a stop string has appeared in the text so far, cut where the
    # earliest such stop string starts. (Overlapping stops: with text " aa", stops "a" and " aa" and one character
    # per chunk, "a" completes first and the answer is " "; " aa" in one chunk gives "".)
    expected, received = text, 0
    for piece in _chunks(list(text), sizes):
        received += len(piece)
        starts = [i for i in (text[:received].find(s) for s in stops) if i >= 0]
        if starts:
            expected = text[: min(starts)]
            break
    assert matcher.stopped == any(s in text for s in stops)
    assert sent == expected
    assert not any(s in sent for s in stops)


@FUZZ
@given(text=st.text(max_size=40), sizes=chunk_sizes, wire=st.sampled_from(["sse", "msgpack"]),
       endpoint=st.sampled_from(["chat", "completion"]))
def test_frames_of_a_whole_response_parse_back_to_the_text(text, sizes, wire, endpoint):
    """ResponseState + ChunkBuilder + encoding, as the streaming node runs them: the client's parse = the text."""
    ids = list(text.encode("utf-8"))
    request = GenerationRequest(request_id="r", prompt_ids=[1, 2], sampling=SamplingOptions(max_tokens=10_000),
                                stop=[], endpoint=endpoint, model_name="m", created_s=1)
    state = ResponseState(ByteTokenizer(), request)
    builder = ChunkBuilder("r", "m", 1, endpoint)
    chunks = _chunks(ids, sizes) or [[]]
    stream = []
    for i, chunk_ids in enumerate(chunks):
        last = i == len(chunks) - 1
        piece = state.on_chunk(TokenChunk(token_ids=chunk_ids, finish_reason="length" if last else None))
        if piece or last:
            stream.append(encode(builder.text(piece, first=i == 0, finish_reason=state.finish_reason), wire))
    stream.append(done_marker(wire))
    objects = _parse(stream, wire)
    assert objects[-1] == "DONE"
    key = (lambda c: c["choices"][0].get("delta", {}).get("content", "")) if endpoint == "chat" else (
        lambda c: c["choices"][0]["text"])
    assert "".join(key(o) for o in objects[:-1]) == text
    assert objects[-2]["choices"][0]["finish_reason"] == "length"
    assert state.num_completion_tokens == len(ids)


def _parse(stream: list, wire: str) -> list:
    if wire == "sse":
        body = "".join(stream)
        events = [e for e in body.split("\n\n") if e]
        assert all(e.startswith("data: ") and "\n" not in e for e in events), "an event must be one line"
        return ["DONE" if e == "data: [DONE]" else json.loads(e[len("data: "):]) for e in events]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(b"".join(stream))
    return ["DONE" if o == {"done": True} else o for o in unpacker]
