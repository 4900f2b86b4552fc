"""Live progress on stderr, without extra dependencies."""

import sys
import time
from dataclasses import dataclass


class LocalCounters:
    """Started / completed / failed request counts for one process."""

    def __init__(self):
        self.values = [0, 0, 0]

    def on_start(self) -> None:
        self.values[0] += 1

    def on_done(self, ok: bool) -> None:
        self.values[1] += 1
        if not ok:
            self.values[2] += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.values[0], self.values[1], self.values[2]


class SharedCounters(LocalCounters):
    """The same counts in shared memory, for several client processes."""

    def __init__(self, shared_array):
        self.values = shared_array

    def on_start(self) -> None:
        with self.values.get_lock():
            self.values[0] += 1

    def on_done(self, ok: bool) -> None:
        with self.values.get_lock():
            self.values[1] += 1
            if not ok:
                self.values[2] += 1


def render_progress(
    started: int, completed: int, failed: int, elapsed_s: float, total_requests: int | None, duration_s: float | None
) -> str:
    """One line: bar, counts, elapsed. The bar follows whichever limit is nearer."""
    fractions = []
    if total_requests:
        fractions.append(completed / total_requests)
    if duration_s:
        fractions.append(elapsed_s / duration_s)
    fraction = min(max(fractions, default=0.0), 1.0)
    width = 30
    filled = int(round(fraction * width))
    bar = "#" * filled + "." * (width - filled)
    total = f"/{total_requests}" if total_requests else ""
    return (
        f"[{bar}] {fraction * 100:5.1f}%  done {completed}{total}  errors {failed}  "
        f"in flight {started - completed}  {elapsed_s:6.1f} s"
    )


@dataclass
class ProgressPrinter:
    """Rewrites one stderr line on a terminal; prints a line every 10 s otherwise."""

    total_requests: int | None
    duration_s: float | None
    enabled: bool = True
    _last_line_at: float = 0.0

    def update(self, counts: tuple[int, int, int], elapsed_s: float, final: bool = False) -> None:
        if not self.enabled:
            return
        line = render_progress(*counts, elapsed_s, self.total_requests, self.duration_s)
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or time.monotonic() - self._last_line_at >= 10.0:
            self._last_line_at = time.monotonic()
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
