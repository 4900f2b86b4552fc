"""Property tests (hypothesis) of the request checks on hostile bodies: every body is a validated request or a
4xx ServeAppError whose OpenAI-style body encodes, never another exception (a 500 at the ingress).

The strategies generate the classes a wider hostile-input run found and the schema-driven fuzzer did not: JSON
nested past any sane depth, integers past Python's integer-string conversion limit, NaN/Infinity, control
characters and lone surrogates (as JSON escapes) in `model` and in field names, non-string `model` values and
seeds at and past the ends of the range vLLM accepts.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.api.errors import ServeAppError
from serve_app.ingress.request_checks import (
    MAX_JSON_DEPTH,
    SEED_MAX,
    SEED_MIN,
    RequestLimits,
    check_request,
)
from serve_app.api.endpoints import ENDPOINTS
from serve_app.server.openai_frontend import request_type
from serve_app.server.request_validation import validate_body

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large])
LIMITS = RequestLimits(max_tokens=100, max_n=4)
TYPES = {name: request_type(name) for name in ("chat", "completion")}

# Control characters, lone surrogates, private-use, unassigned, separators, plus ordinary letters.
ODD_TEXT = st.text(st.characters(categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs", "Ll"]), max_size=8)
# Names that are nothing but control characters and surrogates: for `model` and for field names, which errors echo.
ODD_NAMES = st.text(st.characters(categories=["Cc", "Cs"]), min_size=1, max_size=3) | ODD_TEXT
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | ODD_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(ODD_TEXT, children, max_size=3),
    max_leaves=8,
)
DEPTHS = st.integers(MAX_JSON_DEPTH - 3, 3000)
# Raw JSON text for one value: json.dumps escapes lone surrogates as \udXXX, as a hostile client would send them.
RAW_VALUES = st.one_of(
    JSON_VALUES.map(json.dumps),
    DEPTHS.map(lambda d: "[" * d + "]" * d),
    DEPTHS.map(lambda d: '{"a": ' * d + "1" + "}" * d),
    DEPTHS.map(lambda d: "[" * d),  # deep and unterminated
    st.integers(4000, 6000).map(lambda n: "9" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1E400"]),
)
SEEDS = st.one_of(st.integers(SEED_MAX - 4, SEED_MAX + 1), st.integers(SEED_MIN - 1, SEED_MIN + 1),
                  st.sampled_from([2**64, -(2**64)])).map(str)
COUNTS = st.integers(-1, 5).map(str)
FIELDS = ["seed", "n", "max_tokens", "temperature", "tools", "response_format", "stop", "logit_bias", "user"]


@st.composite
def bodies(draw, endpoint: str) -> bytes:
    """A valid body with one or two parts made hostile, so each class is met past the checks before it."""
    text_field = "messages" if endpoint == "chat" else "prompt"
    fields = {"model": '"m"', text_field: '[{"role": "user", "content": "hi"}]' if endpoint == "chat" else '"hi"'}
    hostile = draw(st.sets(st.sampled_from(["model", "text", "seed", "field", "name"]), min_size=1, max_size=2))
    if "model" in hostile:
        fields["model"] = draw(RAW_VALUES | ODD_NAMES.map(json.dumps))
    if "text" in hostile:
        fields[text_field] = draw(RAW_VALUES)
    if "seed" in hostile:  # near the ends of the range, often with n > 1 (choice i is seeded with seed + i)
        fields["seed"] = draw(SEEDS)
        fields["n"] = draw(COUNTS)
    if "field" in hostile:
        fields[draw(st.sampled_from(FIELDS))] = draw(RAW_VALUES | COUNTS)
    if "name" in hostile:  # an unknown field: its name is echoed in the error
        fields[draw(ODD_NAMES)] = draw(COUNTS)
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}").encode("ascii")


def _check(raw: bytes, endpoint: str) -> None:
    try:  # the ingress's checks, then the model server's validation
        request = validate_body(check_request(raw, ENDPOINTS[endpoint], LIMITS), TYPES[endpoint])
    except ServeAppError as error:
        assert 400 <= error.status_code < 500
        json.dumps(error.to_body(), ensure_ascii=False).encode("utf-8")  # what the ingress's JSONResponse does
        return
    # What passed is something the engine takes: a printable model name and seeds within int64.
    assert request.model is None or (isinstance(request.model, str) and request.model.isprintable())
    if request.seed is not None:
        assert SEED_MIN <= request.seed and request.seed + (getattr(request, "n", None) or 1) - 1 <= SEED_MAX


@FUZZ
@given(raw=bodies("chat"))
def test_hostile_chat_bodies_are_a_request_or_a_clean_4xx(raw):
    _check(raw, "chat")


@FUZZ
@given(raw=bodies("completion"))
def test_hostile_completion_bodies_are_a_request_or_a_clean_4xx(raw):
    _check(raw, "completion")
