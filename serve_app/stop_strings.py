"""Stop strings on streamed text, never leaking a partial stop string to the client.

Text that could be the start of a stop string is held back until the next piece of text shows
whether it is one. The stop string itself is never emitted (OpenAI behaviour).
"""

from __future__ import annotations

from typing import Sequence


class StopStringMatcher:
    def __init__(self, stop: Sequence[str]):
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add new text; return the part that is safe to send. Sets `stopped` when a stop string matched."""
        if self.stopped:
            return ""
        if not self._stop:
            return text
        buffer = self._held + text
        first = min((i for i in (buffer.find(s) for s in self._stop) if i >= 0), default=-1)
        if first >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:first]
        keep = _longest_stop_prefix_suffix(buffer, self._stop)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """At the end of generation, what was held back is plain text after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:length]):
                best = length
                break
    return best
