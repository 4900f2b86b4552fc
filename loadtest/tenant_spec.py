"""Several tenants in one run: each a closed loop of its own users, with its own API key or tenant header.

`--tenants` syntax: tenants separated by commas, each `NAME` followed by `:field=value` parts:

    A:key=sk-a:concurrency=32,B:key=sk-b:concurrency=1        API keys (server auth on)
    A:header=x-tenant-id:concurrency=8,B:header=x-tenant-id   a tenant header (auth off; its value defaults to NAME)

Fields: `concurrency` (users, default 1), `key` (API key) or `key_env` (environment variable holding it),
`header` and `value` (a request header naming the tenant), `priority` (sent as `x-priority`), `requests`
(this tenant's own request count; tenants without one share the run's --num-requests). NAME is letters,
digits and `_`, so per-tenant gates read `tenant_NAME_ttft_p99_ms`. Pure parsing; keys never reach the result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

PRIORITY_HEADER = "x-priority"
_FIELDS = ("concurrency", "key", "key_env", "header", "value", "priority", "requests")


class TenantLoad(BaseModel):
    """One tenant's share of the load."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_]{1,64}$")
    concurrency: int = Field(default=1, ge=1, le=100_000)
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    headers: dict[str, str] = Field(default_factory=dict)
    num_requests: int | None = Field(default=None, ge=1)

    def request_headers(self, base: Mapping[str, str]) -> dict[str, str]:
        """The run's headers, then this tenant's, then its Authorization."""
        headers = {**base, **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def parse_tenants(spec: str, environ: Mapping[str, str] = os.environ) -> list[TenantLoad]:
    """Tenants from the `--tenants` syntax (module docstring); ValueError with the offending part."""
    tenants: list[TenantLoad] = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        name, *fields = entry.split(":")
        values: dict[str, str] = {}
        for field in fields:
            key, sep, value = field.partition("=")
            key = key.strip()
            if not sep or key not in _FIELDS:
                raise ValueError(f"tenant {name!r}: bad field {field!r}; expected one of {', '.join(_FIELDS)} "
                                 "as FIELD=VALUE")
            values[key] = value.strip()
        tenants.append(_tenant(name.strip(), values, environ))
    if not tenants:
        raise ValueError("--tenants lists no tenant")
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise ValueError(f"tenant names must be unique: {names}")
    return tenants


def _tenant(name: str, values: dict[str, str], environ: Mapping[str, str]) -> TenantLoad:
    headers: dict[str, str] = {}
    if "header" in values:
        headers[values["header"].lower()] = values.get("value", name)
    elif "value" in values:
        raise ValueError(f"tenant {name!r}: value= needs header=")
    if "priority" in values:
        headers[PRIORITY_HEADER] = str(int(values["priority"]))
    api_key = values.get("key")
    if "key_env" in values:
        api_key = environ.get(values["key_env"])
        if not api_key:
            raise ValueError(f"tenant {name!r}: environment variable {values['key_env']} is unset or empty")
    try:
        return TenantLoad(name=name, concurrency=int(values.get("concurrency", 1)), api_key=api_key,
                          headers=headers, num_requests=int(values["requests"]) if "requests" in values else None)
    except ValueError as exc:
        raise ValueError(f"tenant {name!r}: {exc}") from None
