"""What re-framing a streamed chunk costs in the model server, with and without the text pass-through (issue 25
item 6): vLLM's chunk parsed (to see whether it carries output) and sent as it came less its null fields, against
parsed, nulls dropped and re-serialized. Same bytes either way (tests/unit/test_fuzz_properties.py).

    .venv/bin/python benchmarks/reframe_cost.py          # results/reframe_cost/reframe_cost.{json,md}

Interleaved repeats of each path over real chunk shapes (chat, completions, with logprobs); microseconds per chunk.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit
from unittest import mock

from harness import REPO, machine

sys.path.insert(0, str(REPO))
from serve_app.server import response_stream  # noqa: E402

CHUNKS = {
    "chat": 'data: {"id":"chatcmpl-3f1c2b7e9a8d4c5b","object":"chat.completion.chunk","created":1764870000,'
            '"model":"SmolLM2-135M-Instruct","choices":[{"index":0,"delta":{"content":" hello"},"logprobs":null,'
            '"finish_reason":null}]}\n\n',
    "completions": 'data: {"id":"cmpl-3f1c2b7e9a8d4c5b","object":"text_completion","created":1764870000,'
                   '"model":"SmolLM2-135M-Instruct","choices":[{"index":0,"text":" hello","logprobs":null,'
                   '"finish_reason":null,"stop_reason":null}]}\n\n',
    "chat_logprobs": 'data: {"id":"chatcmpl-3f1c2b7e9a8d4c5b","object":"chat.completion.chunk","created":1764870000,'
                     '"model":"SmolLM2-135M-Instruct","choices":[{"index":0,"delta":{"content":" hello"},"logprobs":'
                     '{"content":[{"token":" hello","logprob":-0.25,"bytes":[32,104,101,108,108,111],"top_logprobs":'
                     '[{"token":" hello","logprob":-0.25,"bytes":null},{"token":" hi","logprob":-1.5,"bytes":null}]}]},'
                     '"finish_reason":null}]}\n\n',
}


def per_chunk_us(event: str, pass_through: bool, number: int = 20000) -> float:
    reframer = response_stream.StreamReframer("sse")
    if pass_through:
        return timeit.timeit(lambda: reframer.reframe(event), number=number) / number * 1e6
    with mock.patch.object(response_stream, "without_null_fields", lambda event: None):
        return timeit.timeit(lambda: reframer.reframe(event), number=number) / number * 1e6


def main(repeats: int = 7) -> int:
    out = REPO / "results/reframe_cost"
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, event in CHUNKS.items():
        samples = {"parsed": [], "pass_through": []}
        for _ in range(repeats):  # interleaved, so drift hits both alike
            samples["parsed"].append(per_chunk_us(event, pass_through=False))
            samples["pass_through"].append(per_chunk_us(event, pass_through=True))
        same = response_stream.StreamReframer("sse").reframe(event)[0] == response_stream.encode(
            response_stream.drop_nulls(response_stream.parse_sse_event(event)[1]), "sse")
        rows[name] = {k: {"median_us": statistics.median(v), "min_us": min(v), "samples_us": v}
                      for k, v in samples.items()}
        rows[name]["same_bytes"] = same
        rows[name]["ratio"] = rows[name]["pass_through"]["median_us"] / rows[name]["parsed"]["median_us"]
    measured_on = machine()
    result = {"machine": measured_on, "repeats": repeats, "chunks": rows}
    (out / "reframe_cost.json").write_text(json.dumps(result, indent=1))
    lines = ["# Re-framing cost per streamed chunk (model server)", "",
             f"{measured_on['cpu']}, commit {measured_on['commit']}, {repeats} interleaved repeats "
             "(median)", "", "| chunk | parsed + re-serialized | pass-through | ratio | same bytes |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['parsed']['median_us']:.2f} us | {row['pass_through']['median_us']:.2f} us | "
                     f"{row['ratio']:.2f}x | {row['same_bytes']} |")
    (out / "reframe_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
