from loadtest.openai_stream import parse_chunk


def test_completion_and_chat_text():
    assert parse_chunk('{"choices":[{"index":0,"text":"Hi"}]}').text == "Hi"
    chunk = parse_chunk('{"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}')
    assert chunk.text == " there" and chunk.finish_reason == "stop"


def test_role_only_chunk_bears_no_text():
    assert parse_chunk('{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}').text == ""


def test_usage_with_timings_top_level_or_inside_usage():
    top = parse_chunk('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9},"timings":{"queue_ms":1.5}}')
    assert (top.prompt_tokens, top.completion_tokens, top.timings_ms) == (3, 9, {"queue_ms": 1.5})
    inside = parse_chunk('{"choices":[],"usage":{"completion_tokens":2,"timings":{"prefill_ms":4}}}')
    assert inside.timings_ms == {"prefill_ms": 4.0}


def test_done_and_errors():
    assert parse_chunk("[DONE]").is_done
    assert parse_chunk('{"error":{"message":"boom"}}').error == "boom"
    assert parse_chunk("not json").error.startswith("unparseable")
