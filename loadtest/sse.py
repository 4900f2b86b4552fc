"""Incremental Server-Sent Events parser (pure, no I/O).

Follows the WHATWG event-stream rules that matter for LLM streaming:
lines end in LF, CRLF or CR; a blank line dispatches the pending event;
lines starting with ":" are comments (servers send ": keep-alive" ones);
several "data:" lines join with "\\n"; one space after the colon is dropped.

Bytes arrive from the network in arbitrary pieces, so `feed` keeps any
unfinished line (and a trailing CR that may be the first half of CRLF) for
the next call. Lines are split on bytes before UTF-8 decoding, so a
multi-byte character cut between two reads is decoded whole.
"""

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its joined data lines, event type and id."""

    data: str
    event: str = "message"
    event_id: str | None = None


@dataclass
class SSEParser:
    """Feed raw bytes, get complete events. One parser per HTTP response."""

    num_comments: int = 0
    _buffer: bytes = b""
    _data_lines: list[str] = field(default_factory=list)
    _event_type: str = ""
    _event_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes from one network read; return the events they complete."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            line = self._take_line(at_eof=False)
            if line is None:
                return events
            event = self._process_line(line)
            if event is not None:
                events.append(event)

    def finish(self) -> list[SSEEvent]:
        """Flush at end of stream.

        The spec drops an event that is not followed by a blank line; we
        dispatch it instead, so a server that forgets the last blank line
        still has its final chunk (often the usage) counted.
        """
        events: list[SSEEvent] = []
        while self._buffer:
            line = self._take_line(at_eof=True)
            if line is None:
                break
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    def _take_line(self, at_eof: bool) -> str | None:
        buffer = self._buffer
        lf = buffer.find(b"\n")
        cr = buffer.find(b"\r")
        if lf < 0 and cr < 0:
            if at_eof and buffer:
                self._buffer = b""
                return buffer.decode("utf-8", errors="replace")
            return None
        if cr < 0 or (0 <= lf < cr):
            end, next_start = lf, lf + 1
        elif cr == len(buffer) - 1 and not at_eof:
            # A CR at the very end may be half of a CRLF split across reads.
            return None
        else:
            end = cr
            next_start = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
        self._buffer = buffer[next_start:]
        return buffer[:end].decode("utf-8", errors="replace")

    def _process_line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.num_comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_lines.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self._event_id = value
        # "retry" and unknown fields are ignored, as the spec says.
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data_lines:
            self._event_type = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data_lines),
            event=self._event_type or "message",
            event_id=self._event_id,
        )
        self._data_lines = []
        self._event_type = ""
        return event


def sse_data(byte_chunks: Iterable[bytes]) -> Iterator[str]:
    """Each event's data, from a response's raw bytes (e.g. httpx's `iter_bytes()`).

    Use this, not a line iterator: httpx's `iter_lines` splits as `str.splitlines` does, also on U+2028, U+0085
    and other characters that JSON leaves unescaped, so a token that decodes to one cuts an event in two.
    """
    parser = SSEParser()
    for chunk in byte_chunks:
        for event in parser.feed(chunk):
            yield event.data
    for event in parser.finish():
        yield event.data


async def async_sse_data(byte_chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """`sse_data` for an async byte stream (httpx's `aiter_bytes()`)."""
    parser = SSEParser()
    async for chunk in byte_chunks:
        for event in parser.feed(chunk):
            yield event.data
    for event in parser.finish():
        yield event.data
