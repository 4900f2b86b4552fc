import json

from loadtest.cli import main


def run_args(url, out, *extra):
    return ["run", "--base-url", url, "--concurrency", "2", "--num-requests", "4", "--max-tokens", "8",
            "--input-tokens", "4", "--out", str(out), "--no-progress", *extra]


def test_run_writes_outputs_and_gate_fails(fake_url, tmp_path):
    status = main(run_args(fake_url, tmp_path / "a", "--fail-if", "ttft_p99_ms>50", "--slo", "ttft_ms=1000"))
    assert status == 1
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["summary"]["goodput"]["slos_ms"] == {"ttft_ms": 1000.0}
    assert result["config"]["concurrency"] == 2 and "api_key" not in result["config"]
    assert (tmp_path / "a" / "result.md").read_text().startswith("# Load-test report")
    assert (tmp_path / "a" / "result_latency_cdf.png").stat().st_size > 10_000


def test_check_compare_and_invalid_exit(fake_url, tmp_path, capsys):
    assert main(run_args(fake_url, tmp_path / "a", "--no-plots")) == 0
    result_path = str(tmp_path / "a" / "result.json")
    assert main(["check", result_path, "--fail-if", "ttft_p99_ms>100000", "--allow-invalid"]) == 0
    assert main(["check", result_path, "--fail-if", "error_rate>0", "--fail-if", "ttft_p50_ms>100"]) == 1
    # A self-check threshold nobody can meet marks the run invalid: exit 3 under a gate.
    assert main(run_args(fake_url, tmp_path / "b", "--no-plots", "--max-loop-lag-p99-ms", "0.000001",
                         "--fail-if", "ttft_p99_ms>100000")) == 3
    capsys.readouterr()
    assert main(["compare", result_path, str(tmp_path / "b" / "result.json"), "--labels", "a,b",
                 "--out", str(tmp_path / "cmp.md")]) == 0
    table = capsys.readouterr().out
    assert "ttft_p50_ms" in table and "x baseline" in table
    assert (tmp_path / "cmp.md").exists()


def test_sweep_over_concurrency(fake_url, tmp_path):
    status = main(["sweep", "--base-url", fake_url, "--concurrencies", "1,2", "--num-requests", "2",
                   "--max-tokens", "8", "--input-tokens", "4", "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["points"] == [1.0, 2.0]
    assert (tmp_path / "sweep.png").exists() and (tmp_path / "concurrency_2.json").exists()
