"""Counters the server itself reports on GET /metrics, read before and after a run (speculative decoding).

Both serve_app (`serve_app_spec_decode_*`) and bare `vllm serve` (`vllm:spec_decode_num_*`) expose drafts,
draft tokens and accepted tokens; the run's share is the difference of two scrapes (warm-up requests included).
A server without them, or without a reachable /metrics, gives None.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

_NAMES = {
    "drafts": ("serve_app_spec_decode_drafts", "vllm:spec_decode_num_drafts"),
    "draft_tokens": ("serve_app_spec_decode_draft_tokens", "vllm:spec_decode_num_draft_tokens"),
    "accepted_tokens": ("serve_app_spec_decode_accepted_tokens", "vllm:spec_decode_num_accepted_tokens"),
}


def parse_speculation(text: str) -> dict[str, float] | None:
    totals: dict[str, float] = {}
    # Match samples, not families: exposition formats differ on whether the TYPE line carries `_total`.
    keys = {name: key for key, names in _NAMES.items() for name in names}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = keys.get(sample.name.removesuffix("_total"))
            if key is not None:
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals if len(totals) == len(_NAMES) else None


def scrape_speculation(base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0):
    root = base_url.rstrip("/")
    root = root[:-3] if root.endswith("/v1") else root
    try:
        request = urllib.request.Request(root + "/metrics", headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return parse_speculation(response.read().decode())
    except (OSError, ValueError):
        return None


def speculation_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    delta = {key: after[key] - before[key] for key in _NAMES}
    delta["acceptance_rate"] = delta["accepted_tokens"] / delta["draft_tokens"] if delta["draft_tokens"] else None
    delta["tokens_per_step"] = 1 + delta["accepted_tokens"] / delta["drafts"] if delta["drafts"] else None
    return delta
