"""Poison-request quarantine: a request that was running at two engine deaths is refused for a while.

Pure (no vLLM, no asyncio). The model server records the fingerprints of the requests in flight each time its
engine dies; an engine can die from a request (a sampling path that crashes a kernel) or from outside (OOM, a
killed process). One death proves nothing about a request, so it is retried once; a request present at
`max_deaths` deaths is the likely cause, and refusing it for `quarantine_s` keeps one poison request from taking
the model down again and again. Innocent requests present at both deaths are refused too, for a bounded time,
only if identical (same fingerprint): the price of never crashing twice more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Fields that differ between identical requests and do not change what the engine computes.
_IGNORED_FIELDS = frozenset({"request_id", "user", "stream", "stream_options", "metadata"})


def request_fingerprint(endpoint: str, body: dict[str, Any]) -> str:
    """A stable digest of what the engine will be asked to compute for `body` at `endpoint`."""
    kept = {key: value for key, value in body.items() if key not in _IGNORED_FIELDS and value is not None}
    canonical = json.dumps([endpoint, kept], sort_keys=True, separators=(",", ":"), default=str,
                           ensure_ascii=False)
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class Quarantine:
    """Counts, per fingerprint, the engine deaths it was running at; refuses it once that reaches `max_deaths`."""

    max_deaths: int = 2
    quarantine_s: float = 600.0
    # Deaths older than this are forgotten: two deaths a day apart are not one poison request.
    memory_s: float = 3600.0
    _deaths: dict[str, list[float]] = field(default_factory=dict)  # fingerprint -> time of each death (s)
    _until_s: dict[str, float] = field(default_factory=dict)  # fingerprint -> end of its quarantine (s)

    def record_death(self, fingerprints: set[str], now_s: float) -> list[str]:
        """Record one engine death with `fingerprints` in flight; return the ones quarantined by it."""
        newly: list[str] = []
        for fingerprint in fingerprints:
            times = [t for t in self._deaths.get(fingerprint, []) if now_s - t < self.memory_s] + [now_s]
            self._deaths[fingerprint] = times
            if len(times) >= self.max_deaths:
                self._until_s[fingerprint] = now_s + self.quarantine_s
                newly.append(fingerprint)
        self._forget(now_s)
        return newly

    def remaining_s(self, fingerprint: str, now_s: float) -> float | None:
        """Seconds of quarantine left for `fingerprint` (None: not quarantined)."""
        until_s = self._until_s.get(fingerprint)
        if until_s is None or until_s <= now_s:
            return None
        return until_s - now_s

    @property
    def num_quarantined(self) -> int:
        return len(self._until_s)

    def _forget(self, now_s: float) -> None:
        self._deaths = {fp: times for fp, times in self._deaths.items() if now_s - times[-1] < self.memory_s}
        self._until_s = {fp: until for fp, until in self._until_s.items() if until > now_s}
