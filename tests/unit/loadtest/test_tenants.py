"""Multi-tenant runs: the --tenants syntax, per-tenant headers, and per-tenant reports against the fake server."""

import json

import pytest

from loadtest.cli import main
from loadtest.config import LoadTestConfig
from loadtest.experiment import run_experiment
from loadtest.report import console_report, flat_metrics
from loadtest.tenant_spec import parse_tenants
from tests.unit.loadtest.fake_openai_server import (
    FakeScript,
    running_fake_server,
    server_state,
)

# A answers in 100 ms; B is refused with 429; C (by header) answers its first token after 400 ms.
SCRIPT = FakeScript(ttft_s=0.1, gap_s=0.005, num_tokens=4, per_tenant={
    "authorization=Bearer sk-b": {"status": 429},
    "x-tenant-id=C": {"ttft_s": 0.4},
})


@pytest.fixture(scope="module")
def tenant_url():
    with running_fake_server(SCRIPT) as url:
        yield url


def test_parse_keys_headers_and_defaults():
    a, b = parse_tenants("A:key=sk-a:concurrency=32, B:key=sk-b")
    assert (a.name, a.concurrency, a.api_key, a.headers) == ("A", 32, "sk-a", {})
    assert (b.concurrency, b.num_requests) == (1, None)
    (c,) = parse_tenants("C:header=X-Tenant-Id:priority=2:requests=5")
    assert c.headers == {"x-tenant-id": "C", "x-priority": "2"} and c.num_requests == 5 and c.api_key is None
    (d,) = parse_tenants("D:header=x-tenant-id:value=team-d:key_env=MY_KEY", environ={"MY_KEY": "sk-d"})
    assert d.headers == {"x-tenant-id": "team-d"} and d.api_key == "sk-d"
    assert d.request_headers({"x-extra": "1"}) == {"x-extra": "1", "x-tenant-id": "team-d",
                                                   "Authorization": "Bearer sk-d"}
    assert "sk-d" not in repr(d)


@pytest.mark.parametrize("spec, message", [
    ("A:color=red", "bad field"),
    ("A:concurrency", "bad field"),
    ("A,A", "unique"),
    ("A:value=x", "needs header"),
    ("A:key_env=NOT_SET_ANYWHERE", "unset"),
    ("bad-name", "pattern"),
    ("A:concurrency=0", "greater than or equal"),
    (" , ", "no tenant"),
])
def test_parse_errors_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_tenants(spec, environ={})


def test_config_totals_users_hides_keys_and_needs_closed_loop():
    tenants = parse_tenants("A:key=sk-a:concurrency=3:requests=4,B:key=sk-b:requests=2")
    config = LoadTestConfig(tenants=tenants)  # every tenant has its own count: no num_requests needed
    assert config.concurrency == 4
    dumped = json.dumps(config.model_dump(mode="json"))
    assert "sk-a" not in dumped and '"name": "A"' in dumped
    with pytest.raises(ValueError, match="closed loops"):
        LoadTestConfig(tenants=tenants, mode="open", rate_rps=1.0, num_requests=4)
    with pytest.raises(ValueError, match="num_requests"):
        LoadTestConfig(tenants=parse_tenants("A:key=sk-a"))


def test_per_tenant_report_with_keys(tenant_url):
    tenants = parse_tenants("A:key=sk-a:concurrency=3:requests=6,B:key=sk-b:concurrency=1:requests=3")
    before = len(server_state(tenant_url)["tenant_headers"])
    config = LoadTestConfig(base_url=tenant_url, tenants=tenants, max_tokens=4, input_tokens=4)
    result = run_experiment(config, progress=False)
    per_tenant = result["summary"]["tenants"]
    a, b = per_tenant["A"], per_tenant["B"]
    assert (a["num_requests"], a["num_ok"], a["num_429"], a["num_errors"]) == (6, 6, 0, 0)
    assert (b["num_requests"], b["num_ok"], b["num_429"], b["num_errors"]) == (3, 0, 3, 0)
    assert a["ttft_ms"]["n"] == 6 and 100.0 <= a["ttft_ms"]["p50"]["value"] < 1000.0
    assert a["tpot_ms"]["n"] == 6 and "p99" in a["tpot_ms"]
    assert a["goodput"]["good_fraction"] == 1.0 and a["goodput"]["slo_ttft_ms"] == 2000.0
    assert b["goodput"]["good_fraction"] == 0.0 and b["ttft_ms"] == {"n": 0}
    assert a["output_token_share"] == 1.0
    authorizations = [h[0] for h in server_state(tenant_url)["tenant_headers"][before:]]
    assert sorted(authorizations) == ["Bearer sk-a"] * 6 + ["Bearer sk-b"] * 3
    assert {r["tenant"] for r in result["records"]} == {"A", "B"}
    assert "sk-a" not in json.dumps(result)
    flat = flat_metrics(result["summary"])
    assert flat["tenant_B_num_429"] == 3 and flat["tenant_A_good_fraction"] == 1.0 and "tenant_A_ttft_p99_ms" in flat
    report = console_report(result)
    assert "Per tenant:" in report and "| A | 3 | 6 | 6 | 0 | 0 |" in report and "| B | 1 | 3 | 0 | 3 | 0 |" in report


def test_cli_header_tenants_slo_gates_and_markdown(tenant_url, tmp_path, capsys):
    status = main(["run", "--base-url", tenant_url, "--num-requests", "8", "--max-tokens", "4", "--input-tokens", "4",
                   "--tenants", "A:header=x-tenant-id:concurrency=2,C:header=x-tenant-id:concurrency=2",
                   "--slo-ttft-ms", "300", "--slo-tpot-ms", "100", "--out", str(tmp_path), "--no-plots",
                   "--no-progress", "--fail-if", "tenant_C_good_fraction<0.5"])
    assert status == 1  # C's 400 ms TTFT misses the 300 ms SLO: the per-tenant gate trips
    result = json.loads((tmp_path / "result.json").read_text())
    per_tenant = result["summary"]["tenants"]
    assert per_tenant["A"]["num_requests"] + per_tenant["C"]["num_requests"] == 8
    assert per_tenant["A"]["goodput"]["good_fraction"] == 1.0
    assert per_tenant["C"]["goodput"]["good_fraction"] == 0.0
    assert per_tenant["C"]["ttft_ms"]["p50"]["value"] >= 400.0
    assert result["config"]["slo_ttft_ms"] == 300.0 and result["config"]["concurrency"] == 4
    markdown = (tmp_path / "result.md").read_text()
    assert "## Per tenant" in markdown and "TTFT<=300, TPOT<=100" in markdown
    assert "tenants A x2, C x2" in capsys.readouterr().out


def test_cli_rejects_a_bad_tenant_spec(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--tenants", "A:colour=red", "--num-requests", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "bad field" in capsys.readouterr().err


def test_plans_split_each_tenants_users_and_quota_across_workers():
    from loadtest.runner import make_plans

    tenants = parse_tenants("A:key=sk-a:concurrency=5:requests=9,B:key=sk-b:concurrency=1")
    config = LoadTestConfig(tenants=tenants, num_requests=4, workers=2, model="m")
    plans = make_plans(config, "m", jobs=[], start_at_unix=0.0)
    assert [len(p.tenant_user_offsets_s["A"]) for p in plans] == [3, 2]
    assert [len(p.tenant_user_offsets_s["B"]) for p in plans] == [1, 0]
    assert [p.tenant_quotas["A"] for p in plans] == [5, 4]
    assert [p.tenant_quotas["B"] for p in plans] == [None, None]  # B shares the run's num_requests
    assert [p.num_jobs_quota for p in plans] == [2, 2]
