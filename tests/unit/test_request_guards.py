"""Request checks, admission and API-key checks on plain data (the ingress wraps these)."""

import pytest

from serve_app.ingress.admission import AdmissionController
from serve_app.ingress.auth import ApiKeyAuth, hash_key, parse_key_lines
from serve_app.api.errors import ServeAppError
from serve_app.ingress.request_checks import RequestLimits, known_fields, parse_request, requested_max_tokens
from serve_app.server.openai_frontend import CHAT, COMPLETION, RESPONSES

LIMITS = RequestLimits(max_tokens=100, max_n=4)


def parse(raw: bytes, endpoint=CHAT):
    request_type = endpoint.request_type()
    return parse_request(raw, request_type, known_fields(request_type), LIMITS)


def error_of(raw: bytes, endpoint=CHAT) -> ServeAppError:
    with pytest.raises(ServeAppError) as info:
        parse(raw, endpoint)
    return info.value


HI = b'"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    "raw, code, param",
    [
        (b"{not json", "invalid_json", None),
        (b"\xff\xfe{}", "invalid_encoding", None),
        (b"[1, 2]", "invalid_json", None),
        (b"", "invalid_json", None),
        (b'{"model": "m"}', "missing_required_parameter", "messages"),
        (b'{"model": "m", ' + HI + b', "max_tokens": "ten"}', "invalid_value", "max_tokens"),
        (b'{"model": "m", ' + HI + b', "max_tokens": 101}', "invalid_value", "max_tokens"),
        (b'{"model": "m", ' + HI + b', "max_completion_tokens": 101}', "invalid_value", "max_completion_tokens"),
        (b'{"model": "m", ' + HI + b', "n": 5}', "invalid_value", "n"),
        (b'{"model": "m", ' + HI + b', "best_of_all": 2}', "unsupported_parameter", "best_of_all"),
        (b'{"model": "m", "messages": [{"role": 7, "content": "hi"}]}', "invalid_value", None),
    ],
)
def test_bad_chat_bodies_get_a_400_naming_the_problem(raw, code, param):
    error = error_of(raw)
    assert error.status_code == 400 and error.code == code
    if param:
        assert error.param == param
    body = error.to_body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]


def test_options_apps_rely_on_parse_into_vllms_request():
    tools = b'"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]'
    chat = parse(b'{"model": "m", ' + HI + b', ' + tools + b', "tool_choice": "required", "logprobs": true, '
                 b'"top_logprobs": 2, "n": 2, "seed": 3, "stop": ["x"], '
                 b'"response_format": {"type": "json_object"}}')
    assert chat.n == 2 and chat.top_logprobs == 2 and chat.tools[0].function.name == "f"
    assert requested_max_tokens(chat) == 0
    completion = parse(b'{"model": "m", "prompt": [1, 2, 3], "max_tokens": 7, "ignore_eos": true}', COMPLETION)
    assert completion.ignore_eos and requested_max_tokens(completion) == 7
    responses = parse(b'{"model": "m", "input": "hi", "max_output_tokens": 9}', RESPONSES)
    assert requested_max_tokens(responses) == 9
    assert error_of(b'{"model": "m", "input": "hi", "max_output_tokens": 101}', RESPONSES).param == "max_output_tokens"


def test_admission_rejects_beyond_the_bound_and_recovers():
    admission = AdmissionController(max_in_flight=2, retry_after_s=3)
    assert admission.try_acquire() and admission.try_acquire()
    assert not admission.try_acquire()
    error = admission.overloaded_error()
    assert error.status_code == 429 and error.headers == {"Retry-After": "3"}
    admission.release()
    assert admission.try_acquire()


def test_api_keys_are_hashed_and_checked():
    digests = parse_key_lines(["# comment", "clear-key", f"sha256:{hash_key('other')}", ""])
    assert digests == {hash_key("clear-key"), hash_key("other")}
    auth = ApiKeyAuth(digests)
    assert auth.authenticate("Bearer clear-key") == hash_key("clear-key")
    for header in (None, "clear-key", "Bearer wrong"):
        with pytest.raises(ServeAppError) as info:
            auth.authenticate(header)
        assert info.value.status_code == 401 and "clear-key" not in info.value.message


def test_per_key_request_and_token_limits():
    auth = ApiKeyAuth({"d"}, requests_per_minute=2, tokens_per_minute=100)
    auth.admit("d", 10, now_s=0.0)
    auth.admit("d", 10, now_s=1.0)
    with pytest.raises(ServeAppError) as info:
        auth.admit("d", 10, now_s=2.0)
    assert info.value.status_code == 429 and "Retry-After" in info.value.headers
    auth.admit("d", 90, now_s=61.0)  # a new minute
    with pytest.raises(ServeAppError):
        auth.admit("d", 20, now_s=62.0)
