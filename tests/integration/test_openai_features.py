"""The OpenAI options apps rely on, through the unmodified `openai` client against the default deployment.

They are vLLM's own frontend at work inside the model server (tools, structured output, logprobs, n, seed,
the Responses API); these tests pin that the graph passes them through and streams them correctly.
"""

import json

import pytest

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "strict": True,  # OpenAI semantics: only strict tools get their arguments pinned to the schema
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"], "additionalProperties": False},
    },
}
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
               "additionalProperties": False}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tool_choice_required_returns_a_valid_tool_call(openai_client, served_model_name):
    resp = openai_client.chat.completions.create(model=served_model_name, messages=ASK_WEATHER, tools=[WEATHER_TOOL],
                                                 tool_choice="required", max_tokens=60, temperature=0)
    calls = resp.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)


def test_named_tool_choice_streams_its_arguments(openai_client, served_model_name):
    stream = openai_client.chat.completions.create(
        model=served_model_name, messages=ASK_WEATHER, tools=[WEATHER_TOOL], max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True)
    names, arguments = set(), ""
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function.name:
                names.add(call.function.name)
            arguments += call.function.arguments or ""
    assert names == {"get_weather"}
    assert isinstance(json.loads(arguments)["city"], str)


def test_tool_choice_auto_answers_with_text_or_a_parsed_tool_call(openai_client, served_model_name):
    resp = openai_client.chat.completions.create(model=served_model_name, messages=ASK_WEATHER, tools=[WEATHER_TOOL],
                                                 tool_choice="auto", max_tokens=60, temperature=0)
    message = resp.choices[0].message
    if message.tool_calls:  # the hermes parser found a <tool_call> block and turned it into a call
        assert resp.choices[0].finish_reason == "tool_calls"
        json.loads(message.tool_calls[0].function.arguments)
        assert "<tool_call>" not in (message.content or "")
    else:
        assert message.content


def test_response_format_json_schema_is_enforced(openai_client, served_model_name):
    resp = openai_client.chat.completions.create(
        model=served_model_name, messages=QUESTION, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": CITY_SCHEMA}})
    assert resp.choices[0].finish_reason == "stop"
    answer = json.loads(resp.choices[0].message.content)
    assert set(answer) == {"city"} and isinstance(answer["city"], str)


def test_response_format_json_object_starts_a_json_object(openai_client, served_model_name):
    resp = openai_client.chat.completions.create(
        model=served_model_name, max_tokens=40, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Reply with a JSON object whose key 'city' is the capital of France."}])
    content = resp.choices[0].message.content
    assert content.lstrip().startswith("{")
    if resp.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


def test_logprobs_with_top_logprobs_match_the_greedy_tokens(openai_client, served_model_name):
    resp = openai_client.chat.completions.create(model=served_model_name, messages=QUESTION, max_tokens=8,
                                                 temperature=0, logprobs=True, top_logprobs=3)
    entries = resp.choices[0].logprobs.content
    assert len(entries) == resp.usage.completion_tokens
    assert "".join(e.token for e in entries).startswith(resp.choices[0].message.content[:5])
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0 and max(t.logprob for t in entry.top_logprobs) == pytest.approx(entry.logprob, abs=1e-3)


def test_completion_logprobs_and_n_choices(openai_client, served_model_name):
    resp = openai_client.completions.create(model=served_model_name, prompt="The sky is", max_tokens=5,
                                            temperature=0.9, seed=7, n=3, logprobs=2)
    assert sorted(c.index for c in resp.choices) == [0, 1, 2]
    assert all(len(c.logprobs.tokens) == len(c.logprobs.top_logprobs) >= 1 for c in resp.choices)
    assert resp.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in resp.choices)


def test_n_streamed_choices_each_finish(openai_client, served_model_name):
    stream = openai_client.chat.completions.create(model=served_model_name, messages=QUESTION, max_tokens=6, n=2,
                                                   temperature=0.8, seed=1, stream=True)
    finished = {c.index for chunk in stream for c in chunk.choices if c.finish_reason}
    assert finished == {0, 1}


def test_responses_api_streamed_and_not(openai_client, served_model_name):
    resp = openai_client.responses.create(model=served_model_name, input="What is the capital of France?",
                                          max_output_tokens=16, temperature=0)
    assert "Paris" in resp.output_text
    assert resp.usage.output_tokens >= 1
    deltas, types = [], []
    for event in openai_client.responses.create(model=served_model_name, input="What is the capital of France?",
                                                max_output_tokens=16, temperature=0, stream=True):
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(deltas) == resp.output_text
