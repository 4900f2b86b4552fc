"""Request parsing, admission and API-key checks on plain data (the ingress wraps these)."""

import pytest

from serve_app.admission import AdmissionController
from serve_app.auth import ApiKeyAuth, hash_key, parse_key_lines
from serve_app.errors import ServeAppError
from serve_app.protocol import ChatCompletionRequest, CompletionRequest
from serve_app.request_parsing import parse_body


def error_of(raw: bytes, model=ChatCompletionRequest) -> ServeAppError:
    with pytest.raises(ServeAppError) as info:
        parse_body(raw, model)
    return info.value


@pytest.mark.parametrize(
    "raw, code, param",
    [
        (b"{not json", "invalid_json", None),
        (b"\xff\xfe{}", "invalid_encoding", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"model": "m"}', "missing_required_parameter", "messages"),
        (b'{"model": "m", "messages": []}', "invalid_value", "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}', "invalid_value", "temperature"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}', "invalid_value", "top_p"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "invalid_value", "max_tokens"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}', "invalid_value", "max_tokens"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "invalid_value", "n"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{}]}', "invalid_value", "tools"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "best_of": 2}', "unsupported_parameter", "best_of"),
        (b'{"model": "m", "messages": [{"role": "robot", "content": "hi"}]}', "invalid_value", "messages.0.role"),
    ],
)
def test_bad_chat_bodies_get_a_400_naming_the_problem(raw, code, param):
    error = error_of(raw)
    assert error.status_code == 400 and error.code == code
    if param:
        assert error.param == param
    body = error.to_body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]


def test_valid_requests_parse_with_stop_normalised():
    chat = parse_body(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": "x"}', ChatCompletionRequest)
    assert chat.stop == ["x"]
    completion = parse_body(b'{"model": "m", "prompt": [1, 2, 3]}', CompletionRequest)
    assert completion.stop == [] and completion.max_tokens == 16


def test_stream_options_without_stream_is_rejected():
    assert error_of(b'{"model": "m", "prompt": "a", "stream_options": {"include_usage": true}}', CompletionRequest).status_code == 400


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
