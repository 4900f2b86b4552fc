"""TenancyConfig: tenant lookup by key digest or header, priorities a key may use, SLO headers, validation."""

import hashlib

import pytest
from pydantic import ValidationError

from serve_app.tenancy.config import PriorityNotAllowed, TenancyConfig, TenantConfig


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def make_config(**overrides) -> TenancyConfig:
    return TenancyConfig.model_validate({
        "enabled": True,
        "tenants": {
            f"sha256:{digest('sk-a')}": {"name": "A", "weight": 2, "tokens_per_minute": 10_000},
            f"SHA256:{digest('sk-a2').upper()}": {"name": "A", "weight": 2, "tokens_per_minute": 10_000},
            "team-b": {"name": "B", "priority": 1, "allowed_priorities": [0, 2], "ttft_slo_ms": 500},
        },
        **overrides,
    })


def test_defaults_are_off_and_fail_open():
    config = TenancyConfig()
    assert not config.enabled and config.limits_backend == "cluster" and config.limits_failure_mode == "fail_open"
    assert config.default_tenant.name == "default" and config.default_tenant.weight == 1.0
    assert config.tenant_for(None, None) is config.default_tenant


def test_tenant_by_key_digest_with_or_without_prefix():
    config = make_config()
    assert config.tenant_for(digest("sk-a"), None).name == "A"
    assert config.tenant_for("sha256:" + digest("sk-a2"), "team-b").name == "A"  # the key wins over the header
    assert config.tenant_for(None, "team-b").name == "B"
    assert config.tenant_for(None, "someone-else") is config.default_tenant


def test_unlisted_key_is_its_own_tenant_with_default_settings():
    config = make_config(default_tenant={"name": "default", "requests_per_minute": 5})
    one, two = config.tenant_for(digest("sk-x"), None), config.tenant_for(digest("sk-y"), None)
    assert one.name == "key-" + digest("sk-x")[:12] and one.name != two.name
    assert one.requests_per_minute == 5
    assert config.tenant_for(digest("sk-x"), None) is one  # made once


def test_priority_header():
    b = make_config().tenant_for(None, "team-b")
    assert b.priority_for(None) == 1 and b.priority_for(" ") == 1
    assert b.priority_for("0") == 0 and b.priority_for("2") == 2 and b.priority_for("1") == 1
    with pytest.raises(PriorityNotAllowed, match="allowed: \\[0, 1, 2\\]"):
        b.priority_for("-5")
    with pytest.raises(PriorityNotAllowed, match="integer"):
        b.priority_for("high")


def test_ttft_slo_from_tenant_or_header():
    config = make_config()
    b = config.tenant_for(None, "team-b")
    assert b.ttft_slo_s_for(None) == 0.5
    assert b.ttft_slo_s_for("250") == 0.25
    assert config.default_tenant.ttft_slo_s_for(None) is None
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ValueError):
            b.ttft_slo_s_for(bad)


def test_has_limits_and_all_tenants():
    config = make_config()
    assert [t.name for t in config.all_tenants()] == ["default", "A", "B"]
    assert config.tenant_for(digest("sk-a"), None).has_limits
    assert not config.tenant_for(None, "team-b").has_limits


@pytest.mark.parametrize("tenants, message", [
    ({"sha256:abc": {"name": "A"}}, "64 hex"),
    ({"k1": {"name": "A", "weight": 1}, "k2": {"name": "A", "weight": 2}}, "configured twice"),
    ({"k1": {"name": "A", "weight": 0}}, "greater than 0"),
    ({"k1": {"name": "has space"}}, "pattern"),
    ({"k1": {"name": "A", "bogus": 1}}, "Extra inputs"),
])
def test_invalid_tenants_are_rejected(tenants, message):
    with pytest.raises(ValidationError, match=message):
        TenancyConfig.model_validate({"tenants": tenants})


def test_header_names_are_lowercased_and_modes_checked():
    config = TenancyConfig(tenant_header="X-Tenant", priority_header="X-Priority")
    assert config.tenant_header == "x-tenant" and config.priority_header == "x-priority"
    with pytest.raises(ValidationError):
        TenancyConfig(limits_failure_mode="fail_sideways")
    with pytest.raises(ValidationError):
        TenantConfig(name="a", requests_per_minute=0)
