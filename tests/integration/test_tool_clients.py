"""Tool calls and structured output that apps can parse, through real clients (issue 24, item 5).

The tools here are not `strict`: the default `frontend.tool_strict_level: parameter` pins every named and
`required` tool call's arguments to the function's parameter schema, whatever the model (SmolLM2-135M, which
without it answered a named get_weather(city) with the JSON string "Paris"). The tests check structure and
schema validity, never whether the tiny model's answer is right. Clients: the official `openai` client (create,
streamed and whole; `chat.completions.parse` with a pydantic model) and LangChain's `ChatOpenAI` (invoke, stream,
batch, `bind_tools` with a named tool_choice, `with_structured_output`).
"""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.integration

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL = {  # deliberately not `strict`: the app's default must pin the arguments anyway
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_PARAMETERS},
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone",
        "parameters": {"type": "object",
                       "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
                       "required": ["zone"]},
    },
}
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_TOOL["function"]["parameters"]}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
SHORT = {"max_tokens": 100, "temperature": 0}


def assert_valid_arguments(name: str, arguments: str) -> dict:
    """The call names a given tool and its arguments are a JSON object valid against that tool's schema."""
    assert name in SCHEMAS, name
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict), f"arguments are not an object: {arguments!r}"
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


def streamed_calls(stream) -> dict[int, list[str]]:
    """index -> [name, arguments] of the tool calls in a streamed chat completion, deltas joined."""
    calls: dict[int, list[str]] = {}
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, ["", ""])
            if delta.function and delta.function.name:
                call[0] += delta.function.name
            if delta.function and delta.function.arguments:
                call[1] += delta.function.arguments
    return calls


# --- the official openai client ------------------------------------------------------------------------------


@pytest.mark.parametrize("tool_choice", [NAMED, "required"], ids=["named", "required"])
def test_openai_tool_call_arguments_validate_against_the_schema(openai_client, served_model_name, tool_choice):
    resp = openai_client.chat.completions.create(model=served_model_name, messages=ASK_WEATHER,
                                                 tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice, **SHORT)
    calls = resp.choices[0].message.tool_calls
    assert calls, resp.choices[0].message
    for call in calls:
        assert call.type == "function" and call.id
        assert_valid_arguments(call.function.name, call.function.arguments)
    if tool_choice == NAMED:
        assert [call.function.name for call in calls] == ["get_weather"]


@pytest.mark.parametrize("tool_choice", [NAMED, "required"], ids=["named", "required"])
def test_openai_streamed_tool_call_arguments_validate_against_the_schema(openai_client, served_model_name,
                                                                         tool_choice):
    stream = openai_client.chat.completions.create(model=served_model_name, messages=ASK_WEATHER,
                                                   tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice,
                                                   stream=True, **SHORT)
    calls = streamed_calls(stream)
    assert calls
    for name, arguments in calls.values():
        assert_valid_arguments(name, arguments)
    if tool_choice == NAMED:
        assert [name for name, _ in calls.values()] == ["get_weather"]


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int


def test_openai_parse_returns_the_pydantic_model(openai_client, served_model_name):
    completion = openai_client.chat.completions.parse(
        model=served_model_name, response_format=City, **SHORT,
        messages=[{"role": "user", "content": "Describe Paris as JSON: name, country, population in millions."}])
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, City), message.content
    assert message.refusal is None


# --- LangChain's ChatOpenAI -----------------------------------------------------------------------------------


@pytest.fixture
def chat_model(serve_app_url, served_model_name):
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(base_url=f"{serve_app_url}/v1", api_key="unused", model=served_model_name,
                                       max_retries=0, timeout=120, temperature=0, max_tokens=100)


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Current weather in a city.

    Args:
        city: the city's name
        unit: the temperature unit
    """
    return f"20 degrees {unit} in {city}"


def test_langchain_invoke_stream_and_batch(chat_model):
    from langchain_core.messages import AIMessage, AIMessageChunk

    small = chat_model.bind(max_tokens=16)
    answer = small.invoke("What is the capital of France?")
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str) and answer.content

    chunks = list(small.stream("What is the capital of France?"))
    assert chunks and all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    joined = chunks[0]
    for chunk in chunks[1:]:
        joined += chunk
    assert joined.content

    answers = small.batch(["Name a colour.", "Name a fruit.", "Name a city."])
    assert len(answers) == 3 and all(isinstance(a, AIMessage) and a.content for a in answers)


def test_langchain_bind_tools_named_tool_choice_gives_dict_args(chat_model):
    from langchain_core.tools import tool

    weather = tool(get_weather)
    answer = chat_model.bind_tools([weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert not answer.invalid_tool_calls, answer.invalid_tool_calls
    assert [call["name"] for call in answer.tool_calls] == ["get_weather"]
    args = answer.tool_calls[0]["args"]
    assert isinstance(args, dict) and isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(weather.invoke(args), str)  # the app can run the tool with what the model gave


def test_langchain_with_structured_output_returns_the_pydantic_model(chat_model):
    city = chat_model.with_structured_output(City).invoke(
        "Describe Paris as JSON: name, country, population in millions.")
    assert isinstance(city, City)
