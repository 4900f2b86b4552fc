import json

import msgpack

from serve_app.api.framing import SSE_DONE, choose_wire_format
from serve_app.server.response_stream import StreamReframer, openai_error


def parse_sse(stream: str):
    events = [e for e in stream.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


# Chunks exactly as vLLM 0.32's OpenAI serving layer yields them (nulls included).
VLLM_ROLE = ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
             '"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}\n\n')
VLLM_TEXT = ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
             '"delta":{"content":"é"},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n')
VLLM_USAGE = ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
              '"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}\n\n')
VLLM_ERROR = 'data: {"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}\n\n'


def test_vllm_chunks_become_compact_null_free_sse_with_timings_in_the_usage_chunk():
    reframer = StreamReframer("sse")
    role, _, role_output = reframer.reframe(VLLM_ROLE)
    text, _, text_output = reframer.reframe(VLLM_TEXT)
    usage, _, _ = reframer.reframe(VLLM_USAGE, lambda: {"ttft_ms": 12.345})
    done, _, _ = reframer.reframe("data: [DONE]\n\n")
    stream = role + text + usage + done
    data = parse_sse(stream)
    assert data[-1] == "[DONE]" and stream.endswith(SSE_DONE)
    assert "null" not in stream and ", " not in stream
    assert not role_output and text_output  # an empty role delta is not output (TTFT counts from the text)
    assert json.loads(data[1])["choices"][0]["delta"]["content"] == "é"
    assert json.loads(data[2])["timings"] == {"ttft_ms": 12.35}


def test_msgpack_stream_round_trips():
    reframer = StreamReframer("msgpack")
    stream = reframer.reframe(VLLM_TEXT)[0] + reframer.reframe("data: [DONE]\n\n")[0]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(stream)
    objs = list(unpacker)
    assert objs[0]["choices"][0]["delta"]["content"] == "é" and objs[-1] == {"done": True}


def test_vllm_errors_become_openai_errors_with_string_codes():
    data, error, _ = StreamReframer("sse").reframe(VLLM_ERROR)
    assert error == {"message": "boom", "type": "server_error", "param": None, "code": "internal_error"}
    assert json.loads(parse_sse(data)[0])["error"]["type"] == "server_error"
    assert openai_error({"message": "The model `x` does not exist.", "param": "model", "code": 404}) == (
        404, {"error": {"message": "The model `x` does not exist.", "type": "invalid_request_error", "param": "model",
                        "code": "model_not_found"}})
    status, body = openai_error({"message": "This model's maximum context length is 2048 tokens.", "code": 400})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_responses_api_events_keep_their_event_names():
    event = 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi","logprobs":null}\n\n'
    data, _, has_output = StreamReframer("sse").reframe(event)
    assert data == 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi"}\n\n'
    assert has_output


def test_content_negotiation():
    assert choose_wire_format(None) == "sse"
    assert choose_wire_format("text/event-stream") == "sse"
    assert choose_wire_format("application/x-msgpack") == "msgpack"


def test_whole_json_bodies_are_gzipped_only_when_accepted_and_worth_it():
    import gzip

    from serve_app.api.framing import maybe_gzip

    body = json.dumps({"text": "Paris " * 200}).encode()
    packed, headers = maybe_gzip(body, "gzip, deflate")
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(packed) == body and len(packed) < len(body) / 5
    assert maybe_gzip(body, None) == (body, {})
    assert maybe_gzip(body, "identity") == (body, {})
    assert maybe_gzip(b"{}", "gzip") == (b"{}", {})
