import pytest

from tests.unit.loadtest.fake_openai_server import FakeScript, running_fake_server

# The scripted server of most tests: TTFT 200 ms, then a token every 20 ms.
DEFAULT_SCRIPT = FakeScript(ttft_s=0.2, gap_s=0.02, num_tokens=8, timings_ms={"queue_ms": 1.5, "prefill_ms": 12.0})


@pytest.fixture(scope="module")
def fake_url():
    with running_fake_server(DEFAULT_SCRIPT) as url:
        yield url
