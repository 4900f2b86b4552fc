"""Bytes on the wire per generated token: SSE, msgpack and whole JSON (plain and gzip), vs `vllm serve`.

Sends the same fixed-length request (ignore_eos, 64 tokens, temperature 0) several ways and counts the
response body bytes as they come off the socket (`iter_raw`: compressed bytes when gzip is on).

    python benchmarks/wire_bytes.py --serve-app http://127.0.0.1:8011 --vllm http://127.0.0.1:8012 \
        --out results/side_by_side/wire_bytes        # writes .json and .md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

MSGPACK = "application/x-msgpack"


def measure(base_url: str, body: dict, accept: str | None = None, accept_encoding: str = "identity") -> int:
    headers = {"Accept-Encoding": accept_encoding}
    if accept:
        headers["Accept"] = accept
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers, timeout=300) as response:
        response.raise_for_status()
        return sum(len(part) for part in response.iter_raw())


def run(serve_app: str, vllm: str | None, model: str, max_tokens: int) -> list[dict]:
    base = {"model": model, "prompt": "Write a long story about a lighthouse keeper.", "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}
    streamed = {**base, "stream": True}
    rows = []
    cases = [("serve_app", serve_app, "SSE stream", streamed, None, "identity"),
             ("serve_app", serve_app, "msgpack stream", streamed, MSGPACK, "identity"),
             ("serve_app", serve_app, "JSON, whole", base, None, "identity"),
             ("serve_app", serve_app, "JSON, whole, gzip", base, None, "gzip")]
    if vllm:
        cases += [("vllm serve", vllm, "SSE stream", streamed, None, "identity"),
                  ("vllm serve", vllm, "JSON, whole", base, None, "identity")]
    for server, url, label, body, accept, encoding in cases:
        num_bytes = measure(url, body, accept, encoding)
        rows.append({"server": server, "format": label, "bytes": num_bytes, "bytes_per_token": num_bytes / max_tokens})
    return rows


def to_markdown(rows: list[dict], max_tokens: int) -> str:
    lines = [f"Response body bytes for {max_tokens} generated tokens (`benchmarks/wire_bytes.py`).", "",
             "| server | format | bytes | bytes/token |", "|---|---|---|---|"]
    lines += [f"| {r['server']} | {r['format']} | {r['bytes']} | {r['bytes_per_token']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-app", default="http://127.0.0.1:8000")
    parser.add_argument("--vllm", default=None)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", default=None, help="path stem for .json and .md")
    args = parser.parse_args()
    rows = run(args.serve_app, args.vllm, args.model, args.max_tokens)
    text = to_markdown(rows, args.max_tokens)
    print(text)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
