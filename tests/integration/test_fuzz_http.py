"""Schema-driven fuzzing of the real ingress (schemathesis on its OpenAPI schema), valid and invalid bodies.

Every generated request must get either a real answer or a 4xx in the OpenAI error format, never a
5xx, and no replica of the graph may die or restart along the way. The tiny model keeps valid cases
fast; their token counts are capped.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from serve_app.ingress.app import openapi_schema
from tests.integration.conftest import TINY_APP, replica_processes

pytestmark = pytest.mark.integration

SCHEMA = schemathesis.openapi.from_dict(openapi_schema())
OPERATIONS = [("/v1/completions", "POST"), ("/v1/chat/completions", "POST")]
EXAMPLES = 150


@pytest.fixture
def fuzz_url(tiny_app_url):
    return tiny_app_url


def _replica_ids() -> set[int]:
    return {p.pid for p in replica_processes(TINY_APP)}


def _check(response, body=None) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]} for body {str(body)[:600]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
    elif "text/event-stream" in str(response.headers.get("content-type") or response.headers.get("Content-Type")):
        assert response.text.rstrip().endswith("data: [DONE]")
    else:
        assert response.json()["choices"]


@pytest.mark.parametrize("path,method", OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_fuzzed_requests_never_get_a_server_error(fuzz_url, path, method, mode):
    before = _replica_ids()
    assert before, "fuzz app has no replicas"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=SCHEMA[path][method].as_strategy(generation_mode=mode))
    def run(case):
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            case.body["model"] = "tiny-llama"  # otherwise nearly every valid case is a 404
            case.body["max_tokens"] = min(case.body.get("max_tokens") or 16, 16)  # keep valid cases short
            if case.body.get("max_completion_tokens") is not None:
                case.body["max_completion_tokens"] = min(case.body["max_completion_tokens"], 16)
        _check(case.call(base_url=fuzz_url, timeout=60), case.body)

    run()
    assert _replica_ids() == before, "a replica died or restarted during fuzzing"
    assert httpx.get(f"{fuzz_url}/health", timeout=20).status_code == 200
