"""Summarise a side_by_side.sh run: serve_app / vLLM ratios per load point, checked against issue 7's targets.

    python benchmarks/side_by_side_summary.py results/side_by_side   # writes summary.json and summary.md there
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

POINTS = ("c1", "c8", "c32", "poisson50", "poisson90")
METRICS = (  # (name, how to read it from a loadtest summary, higher is better)
    ("ttft_p50_ms", lambda s: s["latency_ms"]["ttft"]["p50"]["value"], False),
    ("ttft_p99_ms", lambda s: s["latency_ms"]["ttft"]["p99"]["value"], False),
    ("tpot_p50_ms", lambda s: s["latency_ms"]["tpot"]["p50"]["value"], False),
    ("itl_p99_ms", lambda s: s["latency_ms"]["itl"]["p99"]["value"], False),
    ("e2e_p50_ms", lambda s: s["latency_ms"]["e2e"]["p50"]["value"], False),
    ("output_tok_s", lambda s: s["output_throughput_tps"], True),
    ("error_rate", lambda s: s["error_rate"], False),
)


def summarise(out: Path) -> dict:
    rows = {}
    for point in POINTS:
        paths = {server: out / f"{point}_{server}" / "result.json" for server in ("vllm", "serve_app")}
        if not all(p.exists() for p in paths.values()):
            continue
        summaries = {server: json.loads(p.read_text())["summary"] for server, p in paths.items()}
        row = {}
        for name, read, _ in METRICS:
            base, ours = read(summaries["vllm"]), read(summaries["serve_app"])
            row[name] = {"vllm": base, "serve_app": ours, "ratio": (ours / base) if base else None}
        rows[point] = row
    return {"points": rows, "targets": check_targets(rows)}


def check_targets(rows: dict) -> list[dict]:
    """Issue 7: 1 user TTFT p50 <= vLLM + 15 ms; 32 users tok/s >= 0.95x, TTFT p99 and ITL p99 <= 1.15x."""
    targets = []
    if "c1" in rows:
        delta = rows["c1"]["ttft_p50_ms"]["serve_app"] - rows["c1"]["ttft_p50_ms"]["vllm"]
        targets.append({"target": "1 user: TTFT p50 <= vLLM + 15 ms", "measured": f"+{delta:.1f} ms", "met": delta <= 15})
    if "c32" in rows:
        for name, label, bound, higher in (("output_tok_s", "output tok/s", 0.95, True),
                                           ("ttft_p99_ms", "TTFT p99", 1.15, False),
                                           ("itl_p99_ms", "inter-token p99", 1.15, False)):
            ratio = rows["c32"][name]["ratio"]
            met = ratio is not None and (ratio >= bound if higher else ratio <= bound)
            sign = ">=" if higher else "<="
            targets.append({"target": f"32 users: {label} {sign} {bound}x vLLM", "measured": f"{ratio:.2f}x", "met": met})
    return targets


def to_markdown(summary: dict) -> str:
    lines = ["| load | metric | vLLM | serve_app | ratio |", "|---|---|---|---|---|"]
    for point, row in summary["points"].items():
        for name, _, higher in METRICS:
            cell = row[name]
            ratio = "-" if cell["ratio"] is None else f"{cell['ratio']:.2f}x"
            lines.append(f"| {point} | {name}{' (higher better)' if higher else ''} | {cell['vllm']:.2f} | {cell['serve_app']:.2f} | {ratio} |")
    lines += ["", "| target (issue 7) | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |" for t in summary["targets"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "results/side_by_side")
    summary = summarise(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
