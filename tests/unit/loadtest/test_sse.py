import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.sse import SSEEvent, SSEParser, async_sse_data, sse_data

STREAM = (
    b": keep-alive\n\n"
    b'data: {"choices":[{"text":"h\xc3\xa9llo"}]}\n\n'
    b"event: custom\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"data:no-space\r\r"
    b":\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent(data='{"choices":[{"text":"h\u00e9llo"}]}'),
    SSEEvent(data="line one\nline two", event="custom", event_id="7"),
    SSEEvent(data="no-space", event_id="7"),
    SSEEvent(data="[DONE]", event_id="7"),
]


def parse_in_pieces(stream: bytes, cuts: list[int]) -> tuple[list[SSEEvent], int]:
    parser = SSEParser()
    events, start = [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        events += parser.feed(stream[start:cut])
        start = cut
    events += parser.finish()
    return events, parser.num_comments


def test_whole_stream_in_one_read_gives_every_event():
    events, num_comments = parse_in_pieces(STREAM, [])
    assert events == EXPECTED
    assert num_comments == 2


def test_every_single_byte_read():
    events, num_comments = parse_in_pieces(STREAM, list(range(len(STREAM))))
    assert events == EXPECTED
    assert num_comments == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_the_same_events(cuts):
    assert parse_in_pieces(STREAM, cuts) == (EXPECTED, 2)


def test_crlf_split_between_reads_is_one_line_end():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [SSEEvent(data="a")]


def test_several_events_in_one_read():
    parser = SSEParser()
    events = parser.feed(b"data: 1\n\ndata: 2\n\n: ping\n\ndata: 3\n\n")
    assert [e.data for e in events] == ["1", "2", "3"]
    assert parser.num_comments == 1


def test_event_without_final_blank_line_is_kept_at_end_of_stream():
    parser = SSEParser()
    assert parser.feed(b"data: last") == []
    assert parser.finish() == [SSEEvent(data="last")]


def test_characters_json_leaves_unescaped_do_not_split_an_event():
    # A token that decodes to U+2028 or NEL (U+0085): valid raw in JSON, a line end to str.splitlines and
    # to httpx's iter_lines. The event must come back whole, in one read or split inside the character.
    event = json.dumps({"choices": [{"text": "a\u2028b\x85c"}]}, ensure_ascii=False).encode()
    stream = b"data: " + event + b"\n\ndata: [DONE]\n\n"
    assert list(sse_data([stream])) == [event.decode(), "[DONE]"]
    middle = stream.index("\u2028".encode()) + 1
    assert list(sse_data([stream[:middle], stream[middle:]])) == [event.decode(), "[DONE]"]


def test_async_sse_data_gives_the_same_events_as_sse_data():
    async def pieces():
        for i in range(0, len(STREAM), 5):
            yield STREAM[i:i + 5]

    async def collect():
        return [data async for data in async_sse_data(pieces())]

    assert asyncio.run(collect()) == [event.data for event in EXPECTED]
