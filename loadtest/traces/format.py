"""The trace file format (JSONL, pure reading and writing; see README.md beside this file).

Line 1 is a header object with `"format": "serve_app-trace/1"` (name, duration_s, description, the generator
and its parameters, the command that regenerates it). Every later line is one request:

    {"t_s": 12.345, "prompt_tokens": 256, "output_tokens": 64, "tenant": "a", "prefix_id": "sys-3"}

`t_s` is the arrival time in seconds from the trace start (non-decreasing); `prompt_tokens` >= 1 and
`output_tokens` >= 1 are what the request sends (a prompt of about that many tokens, `max_tokens` = output
tokens with `ignore_eos`); `tenant` and `prefix_id` are optional (null or absent): the tenant whose key or
header the request carries, and a shared-prefix group (requests with the same id start with the same text).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = "serve_app-trace/1"


@dataclass(frozen=True)
class TraceRequest:
    t_s: float
    prompt_tokens: int
    output_tokens: int
    tenant: str | None = None
    prefix_id: str | None = None

    def __post_init__(self) -> None:
        if not (self.t_s >= 0):
            raise ValueError(f"t_s must be >= 0, got {self.t_s}")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError(f"token counts must be >= 1, got {self.prompt_tokens} / {self.output_tokens}")


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    requests: tuple[TraceRequest, ...]
    # Free-form: description, generator, params, seed, command.
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        times = [r.t_s for r in self.requests]
        if any(b < a for a, b in zip(times, times[1:])):
            raise ValueError(f"trace {self.name!r}: arrival times must be non-decreasing")
        if times and times[-1] > self.duration_s:
            raise ValueError(f"trace {self.name!r}: an arrival at {times[-1]} s lies past duration_s {self.duration_s}")

    def rate_per_interval(self, interval_s: float) -> list[float]:
        """Arrivals per second in each `interval_s` bin over [0, duration_s)."""
        num_bins = max(1, int(-(-self.duration_s // interval_s)))
        counts = [0] * num_bins
        for r in self.requests:
            counts[min(num_bins - 1, int(r.t_s // interval_s))] += 1
        return [c / interval_s for c in counts]


def dumps(trace: Trace) -> str:
    header = {"format": FORMAT_VERSION, "name": trace.name, "duration_s": trace.duration_s, **trace.meta}
    lines = [json.dumps(header, sort_keys=False)]
    for r in trace.requests:
        row = {k: v for k, v in asdict(r).items() if v is not None}
        row["t_s"] = round(r.t_s, 4)
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


def loads(text: str, name: str = "trace") -> Trace:
    """Parse a trace; raises ValueError naming the line on anything malformed."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty trace")
    header = _json_line(lines[0], 1)
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"line 1: expected a header with format {FORMAT_VERSION!r}, got {header.get('format')!r}")
    requests = [_request(_json_line(line, i), i) for i, line in enumerate(lines[1:], start=2)]
    meta = {k: v for k, v in header.items() if k not in ("format", "name", "duration_s")}
    duration_s = float(header.get("duration_s", requests[-1].t_s if requests else 0.0))
    return Trace(str(header.get("name", name)), duration_s, tuple(requests), meta)


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    return loads(path.read_text(), name=path.stem)


def write_trace(trace: Trace, path: str | Path) -> None:
    Path(path).write_text(dumps(trace))


def _json_line(line: str, line_no: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {line_no}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"line {line_no}: expected an object")
    return value


_REQUEST_KEYS = {"t_s", "prompt_tokens", "output_tokens", "tenant", "prefix_id"}


def _request(row: dict[str, Any], line_no: int) -> TraceRequest:
    unknown = set(row) - _REQUEST_KEYS
    if unknown:
        raise ValueError(f"line {line_no}: unknown keys {sorted(unknown)}")
    try:
        return TraceRequest(
            t_s=float(row["t_s"]),
            prompt_tokens=int(row["prompt_tokens"]),
            output_tokens=int(row["output_tokens"]),
            tenant=None if row.get("tenant") is None else str(row["tenant"]),
            prefix_id=None if row.get("prefix_id") is None else str(row["prefix_id"]),
        )
    except KeyError as exc:
        raise ValueError(f"line {line_no}: missing {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"line {line_no}: {exc}") from exc
