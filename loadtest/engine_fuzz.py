"""Engine fuzz: random, valid combinations of every sampling and output option the API accepts, sent in concurrent
batches of mixed requests, and the properties a serving system owes its users whatever they send.

Properties (checked by `judge` per request and by the caller per batch):
- every request ends in a bounded time with a complete answer (a whole response, or a stream that ends with its
  done marker / `response.completed` and carries no error event) or a clean 4xx in the OpenAI error format;
- the engine stays alive (`/health` is 200 after every batch);
- once the clients are done, the engine's running and waiting counts return to 0.

Used by tests/integration/test_engine_fuzz.py (a bounded run in the suite, under speculation off, auto and
ngram) and by `python -m loadtest.engine_fuzz` (a long run that writes the classes it found to a JSON file).
Needs `hypothesis` (a test dependency) and `httpx`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from loadtest.sse import sse_data

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "responses": "/v1/responses"}
# Options a 400 must never name on the default config: speculation `auto` serves everything `off` serves.
MUST_SERVE = ("top_k", "min_p", "logit_bias", "min_tokens", "logprobs", "seed", "n")
PROMPTS = ("What is the capital of France?", "Repeat after me: the cat sat on the mat, the cat sat on the mat.",
           "Write a JSON object with a name and an age.", "hi", "Count from 1 to 20.")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 10}},
                                       "required": ["zone"]}}}
JSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                "age": {"type": "integer"}}, "required": ["name", "age"]}


def request_strategy(vocab_size: int = 1000, max_output: int = 24, unbounded: bool = True):
    """A hypothesis strategy of (endpoint, body) with random valid options. With `unbounded`, some chat requests
    have no `max_tokens`: greedy on a question a real model answers in a sentence (a random-weight model may never
    stop: pass False for it)."""
    from hypothesis import strategies as st

    temperature = st.one_of(st.just(0.0), st.floats(0.1, 1.5).map(lambda x: round(x, 2)))
    top_p = st.floats(0.05, 1.0).map(lambda x: round(x, 2))
    top_k = st.sampled_from([-1, 0, 1, 2, 5, 50])
    min_p = st.sampled_from([0.0, 0.05, 0.3, 0.9])
    penalty = st.floats(-2.0, 2.0).map(lambda x: round(x, 2))
    logit_bias = st.dictionaries(st.integers(0, vocab_size - 1).map(str), st.integers(-100, 100), max_size=3)
    stop = st.one_of(st.text("abcdefghij .,\n", min_size=1, max_size=4),
                     st.lists(st.sampled_from(["the", ".", "\n", "Paris", "1", "cat"]), max_size=3))

    @st.composite
    def sampling(draw, logprobs_style: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        options = {
            "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
            "presence_penalty": penalty, "frequency_penalty": penalty,
            "repetition_penalty": st.floats(0.8, 1.5).map(lambda x: round(x, 2)),
            "seed": st.integers(0, 2**31), "logit_bias": logit_bias, "stop": stop,
            "stop_token_ids": st.lists(st.integers(0, vocab_size - 1), max_size=3),
            "ignore_eos": st.booleans(),
        }
        for name in draw(st.sets(st.sampled_from(sorted(options)), max_size=len(options))):
            body[name] = draw(options[name])
        if logprobs_style == "chat" and draw(st.booleans()):
            body["logprobs"] = True
            body["top_logprobs"] = draw(st.integers(0, 5))
        elif logprobs_style == "completions" and draw(st.booleans()):
            body["logprobs"] = draw(st.integers(0, 5))
        return body

    @st.composite
    def output(draw, body: dict[str, Any], length_field: str, allow_absent: bool) -> None:
        if allow_absent and draw(st.integers(0, 5)) == 0:
            # No max_tokens: greedy on a question the model answers in a sentence, so it stops on its own (a
            # request without a bound may rightly run to the context length; that is not a fault).
            for name in ("ignore_eos", "logit_bias", "min_p", "stop_token_ids", "presence_penalty",
                         "frequency_penalty", "repetition_penalty", "min_tokens"):
                body.pop(name, None)
            body["temperature"] = 0.0
            body["messages"] = [{"role": "user", "content": PROMPTS[0]}]
            return
        body[length_field] = draw(st.integers(1, max_output))
        if draw(st.booleans()):
            body["min_tokens"] = draw(st.integers(0, body[length_field]))

    @st.composite
    def chat(draw) -> tuple[str, dict[str, Any]]:
        body = {"messages": [{"role": "user", "content": draw(st.sampled_from(PROMPTS))}], **draw(sampling("chat"))}
        if draw(st.booleans()):
            body["messages"].insert(0, {"role": draw(st.sampled_from(["system", "developer"])),
                                        "content": "You are terse."})
        shape = draw(st.sampled_from(["text", "text", "json_object", "json_schema", "tools"]))
        draw(output(body, draw(st.sampled_from(["max_tokens", "max_completion_tokens"])),
                    allow_absent=unbounded and shape == "text"))
        body["n"] = draw(st.sampled_from([1, 1, 2, 3])) if "max_tokens" in body or "max_completion_tokens" in body else 1
        if shape == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif shape == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "person", "schema": JSON_SCHEMA,
                                                       "strict": draw(st.booleans())}}
        elif shape == "tools":
            body["tools"] = [WEATHER_TOOL, TIME_TOOL][:draw(st.integers(1, 2))]
            body["tool_choice"] = draw(st.sampled_from(
                ["none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}, None]))
            if body["tool_choice"] is None:
                del body["tool_choice"]
            if draw(st.booleans()):
                body["parallel_tool_calls"] = draw(st.booleans())
        _stream_options(draw, body)
        return "chat", body

    @st.composite
    def completions(draw) -> tuple[str, dict[str, Any]]:
        body = {"prompt": draw(st.sampled_from(PROMPTS)), **draw(sampling("completions"))}
        draw(output(body, "max_tokens", allow_absent=False))
        body["n"] = draw(st.sampled_from([1, 1, 2]))
        _stream_options(draw, body)
        if draw(st.integers(0, 3)) == 0:
            body["echo"] = True
        return "completions", body

    @st.composite
    def responses(draw) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"input": draw(st.sampled_from(PROMPTS))}
        for name, strategy in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k),
                               ("min_p", min_p), ("seed", st.integers(0, 2**31))):
            if draw(st.booleans()):
                body[name] = draw(strategy)
        body["max_output_tokens"] = draw(st.integers(1, max_output))
        if draw(st.booleans()):
            body["instructions"] = "Answer briefly."
        shape = draw(st.sampled_from(["text", "json_schema", "tools"]))
        if shape == "json_schema":
            body["text"] = {"format": {"type": "json_schema", "name": "person", "schema": JSON_SCHEMA}}
        elif shape == "tools":
            body["tools"] = [{"type": "function", **WEATHER_TOOL["function"]}]
            body["tool_choice"] = draw(st.sampled_from(["auto", "required", "none"]))
        body["stream"] = draw(st.booleans())
        return "responses", body

    def _stream_options(draw, body: dict[str, Any]) -> None:
        body["stream"] = draw(st.booleans())
        if body["stream"] and draw(st.booleans()):
            body["stream_options"] = {"include_usage": True}

    return st.one_of(chat(), completions(), responses())


@dataclass
class Outcome:
    endpoint: str
    body: dict[str, Any]
    status: int | None = None
    seconds: float = 0.0
    problem: str | None = None  # None: an answer or a clean 4xx
    error_message: str | None = None  # the 4xx's message (a refusal the caller may judge)

    @property
    def ok(self) -> bool:
        return self.problem is None


def _error_of(data: Any) -> dict[str, Any] | None:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return None


def judge(endpoint: str, status: int, text: str, stream: bool) -> tuple[str | None, str | None]:
    """(problem, 4xx message) for one finished response; problem is None for an answer or a clean 4xx."""
    if 400 <= status < 500:
        try:
            error = _error_of(json.loads(text))
        except ValueError:
            error = None
        if error is None or not error.get("message"):
            return f"{status} not in the OpenAI error format", None
        return None, str(error["message"])
    if status != 200:
        return f"{status}: {text[:200]}", None
    if not stream:
        try:
            data = json.loads(text)
        except ValueError:
            return "200 with a body that is not JSON", None
        if (error := _error_of(data)) is not None:
            return f"200 carrying an error: {error.get('message', '')[:200]}", None
        if endpoint == "responses":
            return (None, None) if data.get("status") in ("completed", "incomplete") else \
                (f"responses status {data.get('status')!r}", None)
        return (None, None) if data.get("choices") else ("200 without choices", None)
    events = list(sse_data([text.encode()]))
    for event in events:
        if event == "[DONE]":
            continue
        try:
            data = json.loads(event)
        except ValueError:
            return f"stream event that is not JSON: {event[:100]}", None
        if (error := _error_of(data)) is not None:
            return f"stream error event: {error.get('message', '')[:200]}", None
        if data.get("type") in ("error", "response.failed"):
            return f"stream {data.get('type')}: {str(data)[:200]}", None
    if endpoint == "responses":
        completed = any('"response.completed"' in e or '"response.incomplete"' in e for e in events)
        return (None, None) if completed else ("responses stream without response.completed", None)
    return (None, None) if events and events[-1] == "[DONE]" else ("stream without [DONE]", None)


async def send(client: httpx.AsyncClient, base_url: str, endpoint: str, body: dict[str, Any],
               timeout_s: float) -> Outcome:
    outcome = Outcome(endpoint, body)
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(base_url + ENDPOINTS[endpoint], json=body, timeout=timeout_s)
        outcome.status = response.status_code
        outcome.problem, outcome.error_message = judge(endpoint, response.status_code, response.text,
                                                       bool(body.get("stream")))
    except TimeoutError:
        outcome.problem = f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        outcome.problem = f"connection: {type(exc).__name__}"
    outcome.seconds = time.monotonic() - start
    return outcome


async def run_batch(base_url: str, cases: list[tuple[str, dict[str, Any]]], model: str | None = None,
                    timeout_s: float = 90.0) -> list[Outcome]:
    """Send every case at once (a concurrent batch of mixed requests) and judge each."""
    async with httpx.AsyncClient() as client:
        bodies = [(endpoint, {**body, **({"model": model} if model else {})}) for endpoint, body in cases]
        return list(await asyncio.gather(*(send(client, base_url, e, b, timeout_s) for e, b in bodies)))


def engine_alive(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def engine_load(base_url: str) -> float:
    """Running + waiting requests in the engine(s), from /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=15).text
    total = 0.0
    for name in ("serve_app_engine_running_requests", "serve_app_engine_waiting_requests"):
        total += sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE))
    return total


def wait_drained(base_url: str, timeout_s: float = 30.0) -> float:
    """Seconds until the engine's running + waiting counts are 0; raises TimeoutError naming the count left."""
    start = time.monotonic()
    load = engine_load(base_url)
    while load > 0:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"engine still has {load:g} running + waiting requests {timeout_s:g} s after the "
                               "last client finished")
        time.sleep(0.5)
        load = engine_load(base_url)
    return time.monotonic() - start


def problem_class(outcome: Outcome) -> str:
    """A short class name for a problem (numbers and ids stripped), to group findings."""
    text = re.sub(r"req-[0-9a-f]+|[0-9]+(\.[0-9]+)?", "N", outcome.problem or "")
    return f"{outcome.endpoint}: {text[:120]}"


def refusal_class(outcome: Outcome) -> str:
    return f"{outcome.endpoint} {outcome.status}: {re.sub(r'[0-9]+', 'N', outcome.error_message or '')[:120]}"


# ---------------------------------------------------------------------------------------------- the long run


def long_run(base_url: str, minutes: float, batch_size: int) -> dict[str, Any]:
    """Batches of random cases until `minutes` pass; every problem and refusal grouped into classes."""
    import warnings

    from hypothesis.errors import NonInteractiveExampleWarning

    strategy = request_strategy()  # hypothesis draws the cases (not seeded: each class keeps its example)
    problems: dict[str, dict[str, Any]] = {}
    refusals: dict[str, int] = {}
    cases = batches = dead = 0
    start = time.monotonic()
    while time.monotonic() - start < minutes * 60:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            batch = [strategy.example() for _ in range(batch_size)]
        outcomes = asyncio.run(run_batch(base_url, batch))
        batches += 1
        cases += len(outcomes)
        for outcome in outcomes:
            if outcome.problem is not None:
                entry = problems.setdefault(problem_class(outcome), {"count": 0, "example": asdict(outcome)})
                entry["count"] += 1
            elif outcome.error_message is not None:
                refusals[refusal_class(outcome)] = refusals.get(refusal_class(outcome), 0) + 1
        if not engine_alive(base_url):
            dead += 1
            problems.setdefault("engine died", {"count": 0, "example": [asdict(o) for o in outcomes]})["count"] += 1
            deadline = time.monotonic() + 300
            while not engine_alive(base_url) and time.monotonic() < deadline:
                time.sleep(2)
    drained_after_s = None
    try:
        drained_after_s = wait_drained(base_url)
    except TimeoutError as exc:
        problems["engine did not drain"] = {"count": 1, "example": str(exc)}
    return {"cases": cases, "batches": batches, "batch_size": batch_size, "minutes": round((time.monotonic() - start) / 60, 2),
            "engine_deaths": dead, "problem_classes": problems, "refusal_classes": refusals,
            "drained_after_s": drained_after_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (loopback only)")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--label", default="default", help="what the server runs (e.g. its speculation mode)")
    parser.add_argument("--out", default=None, help="JSON file for the result")
    args = parser.parse_args(argv)
    if not re.match(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?", args.url):
        parser.error("--url must be a loopback address")
    result = long_run(args.url, args.minutes, args.batch_size)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    result = {"label": args.label, "commit": commit, "cpu": cpu, "date": time.strftime("%Y-%m-%d"), **result}
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("problem_classes",)}, indent=2, default=str))
    print("problem classes:", list(result["problem_classes"]) or "none")
    return 1 if result["problem_classes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
