"""The ingress's endpoint table (no vLLM) agrees with vLLM's request types: a field vLLM adds or drops shows here
before a client meets a wrong 400 (or an unchecked field)."""

import pytest

from serve_app.api.endpoints import ENDPOINTS
from serve_app.server.openai_frontend import ENDPOINTS as SERVING_CALLS, request_type
from serve_app.server.request_validation import known_fields


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_endpoints_fields_are_vllms_request_type_fields(name):
    assert ENDPOINTS[name].fields == known_fields(request_type(name))
    assert SERVING_CALLS[name].route == ENDPOINTS[name].route
