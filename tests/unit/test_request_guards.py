"""Request checks, admission and API-key checks on plain data (the ingress wraps these); a body's path to vLLM's
request object is the ingress's checks (check_request) then the model server's validation (validate_body)."""

import json

import pytest

from serve_app.config import AuthConfig
from serve_app.ingress.admission import AdmissionController
from serve_app.ingress.auth import ApiKeyAuth, hash_key, parse_key_lines
from serve_app.api.errors import ServeAppError
from serve_app.ingress.request_checks import (
    MAX_JSON_DEPTH,
    SEED_MAX,
    SEED_MIN,
    RequestLimits,
    check_request,
    requested_max_tokens,
    wants_stream,
)
from serve_app.api.endpoints import CHAT, COMPLETION, RESPONSES
from serve_app.server.openai_frontend import request_type
from serve_app.server.request_validation import validate_body

LIMITS = RequestLimits(max_tokens=100, max_n=4)


def parse(raw: bytes, endpoint=CHAT):
    return validate_body(check_request(raw, endpoint, LIMITS), request_type(endpoint.name))


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
    assert requested_max_tokens(json.loads(b'{"model": "m", ' + HI + b'}')) == 0
    completion_raw = b'{"model": "m", "prompt": [1, 2, 3], "max_tokens": 7, "ignore_eos": true}'
    completion = parse(completion_raw, COMPLETION)
    assert completion.ignore_eos and requested_max_tokens(json.loads(completion_raw)) == 7
    responses = parse(b'{"model": "m", "input": "hi", "max_output_tokens": 9}', RESPONSES)
    assert responses.max_output_tokens == 9
    assert requested_max_tokens({"max_output_tokens": 9}) == 9
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


# ---------------------------------------------------------------- hostile bodies: clean 400s, never a 500

DEEP_LIST = b"[" * 100_000
HUGE_INT = b"9" * 5000  # past Python's 4300-digit integer-string conversion limit


def _chat(extra: bytes) -> bytes:
    return b'{"model": "m", ' + HI + b", " + extra + b"}"


def _encodable(error: ServeAppError) -> None:
    body = error.to_body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # what JSONResponse does: must not raise


@pytest.mark.parametrize("raw", [
    DEEP_LIST,
    b'{"model": "m", "messages": ' + DEEP_LIST + b"}",
    _chat(b'"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
          + b'{"a": ' * 500 + b"1" + b"}" * 500 + b"}}"),
    _chat(b'"tools": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)),
])
def test_deeply_nested_json_is_a_400_naming_the_nesting_depth(raw):
    error = error_of(raw)
    assert error.status_code == 400 and error.code == "invalid_json" and "nesting depth" in error.message
    _encodable(error)


def test_nesting_below_the_limit_still_parses():
    schema = b'{"type": "object", "properties": {"a": ' * 10 + b'{"type": "string"}' + b"}}" * 10
    request = parse(_chat(b'"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
                          + schema + b"}}"))
    assert request.response_format.type == "json_schema"


@pytest.mark.parametrize("raw", [_chat(b'"max_tokens": ' + HUGE_INT), _chat(b'"seed": -' + HUGE_INT),
                                 b'{"model": ' + HUGE_INT + b"}"])
def test_integers_past_pythons_conversion_limit_are_a_400(raw):
    error = error_of(raw)
    assert error.status_code == 400 and error.code == "invalid_json" and "digits" in error.message
    _encodable(error)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_constants_are_a_400(constant):
    error = error_of(_chat(b'"temperature": ' + constant))
    assert error.status_code == 400 and error.code == "invalid_json"


@pytest.mark.parametrize("model", [b"5", b"true", b'["m"]', b'{"a": 1}', b"1.5"])
def test_a_model_that_is_not_a_string_is_a_400_naming_model(model):
    for endpoint, rest in ((CHAT, HI), (COMPLETION, b'"prompt": "x"'), (RESPONSES, b'"input": "x"')):
        error = error_of(b'{"model": ' + model + b", " + rest + b"}", endpoint)
        assert error.status_code == 400 and error.param == "model" and error.code == "invalid_value"


@pytest.mark.parametrize("model", [rb'"\ud800"', rb'"a\u0000b"', rb'"m\u001b[31m"', rb'"\udfff\ud800"',
                                   rb'"m\n"', rb'"\u2028"'])
def test_odd_characters_in_model_are_a_400_naming_model(model):
    error = error_of(b'{"model": ' + model + b", " + HI + b"}")
    assert error.status_code == 400 and error.param == "model"
    _encodable(error)


def test_a_lone_surrogate_echoed_in_an_error_still_encodes():
    error = error_of(_chat(rb'"\ud800x": 1'))  # an unknown field whose name is a lone surrogate
    assert error.code == "unsupported_parameter"
    _encodable(error)


@pytest.mark.parametrize("seed, n", [(SEED_MAX + 1, None), (SEED_MIN - 1, None), (2**64, None), (SEED_MAX, 2),
                                     (SEED_MAX - 2, 4)])
def test_out_of_range_seeds_are_a_400_naming_seed(seed, n):
    extra = f'"seed": {seed}' + (f', "n": {n}' if n else "")
    error = error_of(_chat(extra.encode()))
    assert error.status_code == 400 and error.param == "seed" and error.code == "invalid_value"
    assert str(SEED_MIN) in error.message


def test_seeds_at_the_ends_of_the_range_are_accepted():
    assert parse(_chat(f'"seed": {SEED_MAX}'.encode())).seed == SEED_MAX
    assert parse(_chat(f'"seed": {SEED_MIN}'.encode())).seed == SEED_MIN
    assert parse(_chat(f'"seed": {SEED_MAX - 3}, "n": 4'.encode())).n == 4
    assert parse(f'{{"model": "m", "prompt": "x", "seed": {SEED_MAX}}}'.encode(), COMPLETION).seed == SEED_MAX


# ---------------------------------------------------------------- auth without keys fails at start, naming the setting

def test_auth_without_keys_fails_naming_the_setting(monkeypatch):
    monkeypatch.delenv("SERVE_APP_TEST_KEYS", raising=False)
    with pytest.raises(ValueError) as info:
        ApiKeyAuth.from_config(AuthConfig(enabled=True, api_keys_env="SERVE_APP_TEST_KEYS"))
    assert "SERVE_APP_TEST_KEYS" in str(info.value) and "auth.api_keys_env" in str(info.value)
    assert "auth.api_keys_file" in str(info.value)
    monkeypatch.setenv("SERVE_APP_TEST_KEYS", " , ")
    with pytest.raises(ValueError, match="SERVE_APP_TEST_KEYS"):
        ApiKeyAuth.from_config(AuthConfig(enabled=True, api_keys_env="SERVE_APP_TEST_KEYS"))
    monkeypatch.setenv("SERVE_APP_TEST_KEYS", "k1,k2")
    assert ApiKeyAuth.from_config(AuthConfig(enabled=True, api_keys_env="SERVE_APP_TEST_KEYS")).digests == {
        hash_key("k1"), hash_key("k2")}
    assert ApiKeyAuth.from_config(AuthConfig(enabled=False, api_keys_env="SERVE_APP_TEST_NONE")) is None


def test_auth_with_an_empty_or_missing_keys_file_fails_naming_it(monkeypatch, tmp_path):
    monkeypatch.delenv("SERVE_APP_TEST_KEYS", raising=False)
    empty = tmp_path / "keys"
    empty.write_text("# no keys yet\n\n")
    for path, words in ((empty, "has no keys"), (tmp_path / "missing", "cannot be read")):
        with pytest.raises(ValueError) as info:
            ApiKeyAuth.from_config(AuthConfig(enabled=True, api_keys_file=str(path), api_keys_env="SERVE_APP_TEST_KEYS"))
        assert "auth.api_keys_file" in str(info.value) and str(path) in str(info.value) and words in str(info.value)


def test_serve_refuses_auth_without_keys_before_starting_anything(monkeypatch, tmp_path, capsys):
    from serve_app import cli
    from serve_app.platform import models

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("serve-app serve went on to prepare the model and start Ray")

    monkeypatch.setattr(models, "resolve_model_path", must_not_run)
    monkeypatch.delenv("SERVE_APP_TEST_KEYS", raising=False)
    config = tmp_path / "app.yaml"
    config.write_text("auth: {enabled: true, api_keys_env: SERVE_APP_TEST_KEYS}\n")
    assert cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "SERVE_APP_TEST_KEYS" in err and "auth.api_keys_env" in err and err.count("\n") == 1


@pytest.mark.parametrize("embeds", ['""', "[]"])
def test_an_empty_prompt_embeds_is_a_400_not_an_engine_crash(embeds):
    # Found by the HTTP fuzzer: {"echo": true, "prompt_embeds": ""} without a prompt made vLLM 0.32 answer 500.
    raw = b'{"model": "m", "echo": true, "max_tokens": 4, "prompt_embeds": ' + embeds.encode() + b"}"
    error = error_of(raw, COMPLETION)
    assert (error.status_code, error.param) == (400, "prompt_embeds")


def test_unknown_message_role_is_a_400_naming_it():
    from serve_app.ingress.request_checks import check_roles

    check_roles({"messages": [{"role": r, "content": "x"} for r in ("system", "developer", "user", "assistant",
                                                                     "tool", "function")]})
    with pytest.raises(ServeAppError) as info:
        check_roles({"messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "hi"}]})
    assert info.value.status_code == 400 and info.value.param == "messages[1].role" and "'wizard'" in str(info.value)
    with pytest.raises(ServeAppError, match="input\\[0\\].role"):
        check_roles({"input": [{"role": "tool", "content": "x"}]})
    check_roles({"input": "a plain string prompt"})


def test_a_lone_surrogate_is_a_400_naming_the_field_and_a_pair_is_text():
    import json

    from serve_app.ingress.request_checks import check_text_encodable

    raw = b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["ok", "\\ud800"]}'
    with pytest.raises(ServeAppError) as info:
        check_text_encodable(raw, json.loads(raw))
    assert info.value.status_code == 400 and info.value.param == "stop[1]"
    pair = b'{"stop": "\\ud83d\\ude00", "messages": []}'
    check_text_encodable(pair, json.loads(pair))


@pytest.mark.parametrize("value, bound", [(7, 7), (7.0, 7), ("7", 7), (None, 0), (True, 0), ("x", 0), (-3, 0)])
def test_requested_max_tokens_reads_what_vllm_would_take(value, bound):
    assert requested_max_tokens({"max_tokens": value}) == bound


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), (1, True), ("yes", True), (False, False),
                                             (None, False), ("false", False), (0, False), ("off", False)])
def test_the_stream_flag_is_read_as_vllm_reads_it(value, expected):
    assert wants_stream({"stream": value}) is expected
    if value is not None:
        assert bool(request_type("chat").model_validate({"messages": [], "stream": value}).stream) is expected
