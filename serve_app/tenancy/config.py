"""Tenants: who a request belongs to, its share of the engines, its limits and its latency target.

A tenant is an API key (by its digest, `sha256:<hex>`) when auth is on, or the value of `tenant_header` when
auth is off. A key that `tenants` does not list is a tenant of its own with `default_tenant`'s settings (named
`key-<first 12 hex digits>`), so every key gets its own share and limits as before; a header value that is not
listed, or no header, is `default_tenant` itself (header values come from clients, so they cannot mint shares).
Several keys may name the same tenant (key rotation) as long as their settings agree. Validation does no I/O.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from serve_app.config_base import StrictModel

DIGEST_PREFIX = "sha256:"
_DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
# Tenant names appear in metrics labels, limiter keys and logs: keep them plain.
_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class PriorityNotAllowed(ValueError):
    """A request asked (by header) for a priority its tenant may not use, or sent a value that is no integer."""


class TenantConfig(StrictModel):
    """One tenant's share, limits, priority and latency target."""

    name: str = Field(pattern=_NAME_PATTERN)
    # Share of the engines under saturation, relative to the other waiting tenants (2 gets twice 1's tokens).
    weight: float = Field(1.0, gt=0)
    # Cluster-wide limits (all ingress replicas together); None = unlimited.
    requests_per_minute: int | None = Field(None, ge=1)
    # Counted as prompt tokens + max_tokens of each request.
    tokens_per_minute: int | None = Field(None, ge=1)
    # vLLM scheduling priority of the tenant's requests: lower is served sooner (vLLM's convention). It orders
    # requests within the tenant only; it never moves a tenant ahead of its fair share.
    priority: int = 0
    # Further priorities a request of this tenant may ask for with the priority header.
    allowed_priorities: list[int] = Field(default_factory=list)
    # Refuse a request at once (429) when its predicted time to first token exceeds this; None = no target.
    ttft_slo_ms: float | None = Field(None, gt=0)

    @property
    def has_limits(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def priority_for(self, header_value: str | None) -> int:
        """The request's priority: the tenant's own, or the one the header asks for if the tenant may use it."""
        if header_value is None or not header_value.strip():
            return self.priority
        try:
            requested = int(header_value.strip())
        except ValueError:
            raise PriorityNotAllowed(f"priority must be an integer, got {header_value[:32]!r}") from None
        if requested != self.priority and requested not in self.allowed_priorities:
            allowed = sorted({self.priority, *self.allowed_priorities})
            raise PriorityNotAllowed(f"priority {requested} is not allowed for this API key (allowed: {allowed})")
        return requested

    def ttft_slo_s_for(self, header_value: str | None) -> float | None:
        """The request's TTFT target in seconds: the header's (ms, > 0) when given, else the tenant's."""
        if header_value is not None and header_value.strip():
            try:
                value_ms = float(header_value.strip())
            except ValueError:
                raise ValueError(f"TTFT SLO must be a number of milliseconds, got {header_value[:32]!r}") from None
            if not value_ms > 0:
                raise ValueError(f"TTFT SLO must be > 0 ms, got {value_ms}")
            return value_ms / 1000.0
        return None if self.ttft_slo_ms is None else self.ttft_slo_ms / 1000.0


class TenancyConfig(StrictModel):
    """Multi-tenant admission at the ingress (off by default: first come, first served as before)."""

    enabled: bool = False
    # With auth off, the tenant is this request header's value (tenants are keyed by it), but only with
    # `trust_tenant_header`: set it only where a proxy you run sets the header (and strips a client's own), since
    # any client can send it and claim any tenant's weight, priorities and limits. Otherwise, with auth off, every
    # request is `default_tenant`. With auth on, the API key decides the tenant and the header is never read.
    tenant_header: str = "x-tenant-id"
    trust_tenant_header: bool = False
    # Keyed by API key digest (`sha256:<64 hex>`, as in auth's key files) with auth on, or by header value.
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    # Every request that matches no key of `tenants`.
    default_tenant: TenantConfig = Field(default_factory=lambda: TenantConfig(name="default"))
    # A request may ask for another priority (an integer, lower is sooner) with this header.
    priority_header: str = "x-priority"
    # A request may set its own TTFT target (milliseconds) with this header, replacing its tenant's.
    ttft_slo_header: str = "x-ttft-slo-ms"
    # `cluster`: one Ray actor shared by all ingress replicas of the app holds the per-minute budgets, so a
    # limit holds across the cluster. `local`: each ingress replica enforces every limit on its own
    # (a tenant may then get up to num_ingress_replicas x its limit).
    limits_backend: Literal["cluster", "local"] = "cluster"
    # What happens while the limiter actor cannot be reached (a call fails or takes over
    # `limits_call_timeout_s`); tenants without limits are never affected:
    # - `fail_open`: requests are still admitted; each ingress replica enforces its share of every limit
    #   (limit / number of replicas the actor last reported) on local counters, and logs the outage once.
    #   The cluster stays near its limits but can exceed them when replicas were added during the outage.
    # - `fail_closed`: requests of tenants with limits are refused with 503 and a Retry-After of
    #   `limits_retry_s` until the actor answers again.
    # Either way the actor is looked up again (and recreated if it died) every `limits_retry_s`; a recreated
    # actor starts with full budgets.
    limits_failure_mode: Literal["fail_open", "fail_closed"] = "fail_open"
    # Each replica leases at most this fraction of a tenant's per-minute limit at a time and spends it without
    # a round trip (see serve_app/tenancy/limits.py).
    limits_lease_fraction: float = Field(0.02, gt=0, le=1)
    # An unspent lease goes back to the cluster budget after this long.
    limits_lease_ttl_s: float = Field(2.0, gt=0)
    limits_call_timeout_s: float = Field(0.5, gt=0)
    limits_retry_s: float = Field(5.0, gt=0)
    # A request waits at most this long for its fair turn at a saturated ingress before a 429.
    max_queue_wait_s: float = Field(30.0, gt=0)
    # Requests per model this ingress replica lets into the engines at once (besides the reserve); None: the
    # model's max_num_seqs x its running replicas / the running ingress replicas, followed as they change
    # (with_model placement: exactly the replica's own engine's max_num_seqs).
    engine_slots: int | None = Field(None, ge=1)
    # Slots per engine kept for tenants under their share beside others (a flooding tenant alone never fills
    # them), so a quiet tenant starts at once instead of waiting for a flood request to end. They are headroom:
    # the engine runs max_num_seqs + reserved_slots sequences at most, so a tenant alone loses nothing.
    reserved_slots: int = Field(1, ge=0)
    # Prefill pacing (serve_app/tenancy/pacing.py): beside other tenants, a tenant over its share waits for a
    # quiet tenant's prefill to give its first token and otherwise starts about one request per engine step, so a
    # quiet tenant's prefill is not batched with a burst of the flood's (an engine step runs all new prefills
    # together). A tenant under its share, or alone, is never paced.
    pace_prefills: bool = True
    # A request that has not reported its first token (e.g. not streamed) stops holding others back after this.
    prefill_hold_s: float = Field(2.0, gt=0)
    # Tenants made for keys that `tenants` does not list, by digest (bounded by the number of issued keys).
    _key_tenants: dict[str, TenantConfig] = PrivateAttr(default_factory=dict)

    @field_validator("tenant_header", "priority_header", "ttft_slo_header")
    @classmethod
    def _lower_header(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("header names must not be empty")
        return value.strip().lower()

    @field_validator("tenants", mode="before")
    @classmethod
    def _lower_digests(cls, value):
        if isinstance(value, dict):
            return {(k.lower() if isinstance(k, str) and k.lower().startswith(DIGEST_PREFIX) else k): v
                    for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check_tenants(self) -> TenancyConfig:
        by_name: dict[str, TenantConfig] = {self.default_tenant.name: self.default_tenant}
        for key, tenant in self.tenants.items():
            if key.startswith(DIGEST_PREFIX) and not _DIGEST_PATTERN.match(key):
                raise ValueError(f"tenant key {key[:16]!r}...: a digest is 'sha256:' and 64 hex digits")
            if not key.strip():
                raise ValueError("tenant keys must not be empty")
            known = by_name.setdefault(tenant.name, tenant)
            if known is not tenant and known != tenant:
                raise ValueError(f"tenant {tenant.name!r} is configured twice with different settings "
                                 "(several keys of one tenant must agree)")
        return self

    def tenant_for(self, key_digest: str | None, header_value: str | None) -> TenantConfig:
        """The tenant of a request: by API key digest (hex, with or without `sha256:`) when auth gave one,
        else by the tenant header's value (see the module docstring for keys and values not listed)."""
        if key_digest is not None:
            digest = key_digest.lower()
            if not digest.startswith(DIGEST_PREFIX):
                digest = DIGEST_PREFIX + digest
            tenant = self.tenants.get(digest)
            if tenant is None:
                tenant = self._key_tenants.get(digest)
                if tenant is None:
                    name = "key-" + digest[len(DIGEST_PREFIX):][:12]
                    tenant = self._key_tenants[digest] = self.default_tenant.model_copy(update={"name": name})
            return tenant
        if header_value is not None and header_value.strip():
            return self.tenants.get(header_value.strip(), self.default_tenant)
        return self.default_tenant

    def all_tenants(self) -> list[TenantConfig]:
        """Each distinct tenant once (the default first)."""
        seen: dict[str, TenantConfig] = {self.default_tenant.name: self.default_tenant}
        for tenant in self.tenants.values():
            seen.setdefault(tenant.name, tenant)
        return list(seen.values())
