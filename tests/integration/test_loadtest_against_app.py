"""The load generator against the real serve_app (Ray Serve + vLLM on CPU)."""

import pytest

from loadtest.config import LoadTestConfig
from loadtest.experiment import run_experiment

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_short_run_completes_without_errors(serve_app_url, served_model_name, endpoint):
    config = LoadTestConfig(
        base_url=serve_app_url,
        endpoint=endpoint,
        model=served_model_name,
        concurrency=4,
        num_requests=8,
        max_tokens=16,
        input_tokens=32,
        ignore_eos=True,
        request_timeout_s=120.0,
    )
    result = run_experiment(config, progress=False)
    summary = result["summary"]
    assert summary["num_errors"] == 0, summary["errors_by_kind"]
    assert summary["num_ok"] == 8
    assert summary["latency_ms"]["ttft"]["n"] == 8
    assert summary["output_throughput_tps"] > 0
    for record in result["records"]:
        assert record["first_text_s"] is not None
        # ignore_eos: the server must produce exactly max_tokens.
        assert record["output_tokens_server"] == 16
