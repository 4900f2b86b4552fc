"""Turns per-model measurements into the comparison table (pure), Markdown, JSON and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

from serve_app.compress import metrics
from serve_app.compress.prompts import FACT_PROMPTS, is_correct

COLUMNS = (
    ("name", "model"),
    ("method", "method"),
    ("dtype", "dtype"),
    ("size_mb", "size MB"),
    ("perplexity", "perplexity"),
    ("ppl_change_pct", "ppl vs base %"),
    ("num_correct", "answers right"),
    ("agreement", "greedy agreement"),
    ("tok_s_c1", "tok/s @1"),
    ("tok_s_c16", "tok/s @16"),
    ("speedup_c16", "speed-up @16"),
    ("ttft_p50_ms_c1", "TTFT p50 ms @1"),
    ("ttft_p50_ms_c16", "TTFT p50 ms @16"),
    ("note", "note"),
)


def _speed_at(result: dict, concurrency: int) -> dict | None:
    for row in result.get("speed", []):
        if row["concurrency"] == concurrency:
            return row
    return None


def build_rows(base: dict, others: list[dict]) -> list[dict]:
    """One row per model; `base` and each of `others` is {"name", "method", "path", "size_mb", "note", "result"}."""
    base_result = base["result"]
    base_answers = base_result.get("answers", [])
    base_c16 = _speed_at(base_result, 16)
    rows = []
    for entry in [base, *others]:
        result = entry["result"]
        row = {"name": entry["name"], "method": entry["method"], "dtype": entry.get("dtype", "float32"),
               "size_mb": round(entry["size_mb"], 1),
               "note": entry.get("note", "")}
        if "error" in result:
            row["note"] = f"not served by vLLM here: {result['error']}. {row['note']}".strip()
            rows.append(row)
            continue
        if "incomplete" in result:
            row["note"] = f"{result['incomplete']}: missing columns not measured. {row['note']}".strip()
        row["perplexity"] = round(result["perplexity"], 3)
        if "perplexity" in base_result:
            row["ppl_change_pct"] = round(100 * (result["perplexity"] / base_result["perplexity"] - 1), 2)
        answers = result.get("answers", [])
        num_right = sum(is_correct(a["text"], p) for a, p in zip(answers, FACT_PROMPTS))
        row["num_correct"] = f"{num_right}/{len(answers)}"
        if base_answers and answers:
            scores = [metrics.prefix_agreement(b["output_ids"], a["output_ids"]) for b, a in zip(base_answers, answers)]
            row["agreement"] = round(sum(scores) / len(scores), 3)
        for concurrency in (1, 16):
            speed = _speed_at(result, concurrency)
            if speed:
                row[f"tok_s_c{concurrency}"] = round(speed["output_tokens_per_s"], 1)
                row[f"ttft_p50_ms_c{concurrency}"] = round(speed["ttft_p50_ms"], 1)
        speed16 = _speed_at(result, 16)
        if speed16 and base_c16:
            row["speedup_c16"] = round(speed16["output_tokens_per_s"] / base_c16["output_tokens_per_s"], 2)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = [str(row.get(key, "–")) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, rows: list[dict], raw: dict, header_lines: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compression.json").write_text(json.dumps({"rows": rows, "raw": raw}, indent=2))
    text = "\n".join(header_lines) + "\n\n" + markdown_table(rows) + "\n"
    answers = []
    for name, result in raw.items():
        for answer in result.get("answers", [])[:1]:
            answers.append(f"- {name}: {answer['question']} -> {answer['text'].strip()!r}")
    if answers:
        text += "\nFirst prompt, greedy:\n\n" + "\n".join(answers) + "\n"
    (out_dir / "compression.md").write_text(text)
    plot(out_dir / "compression.png", rows)


def plot(path: Path, rows: list[dict]) -> None:
    """Two panels: perplexity vs size on disk, perplexity vs tok/s at 16 concurrent requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = [r for r in rows if "perplexity" in r]
    fig, (ax_size, ax_speed) = plt.subplots(1, 2, figsize=(12, 5))
    for row in served:
        for ax, key in ((ax_size, "size_mb"), (ax_speed, "tok_s_c16")):
            if key in row:
                ax.scatter(row[key], row["perplexity"], s=60)
                ax.annotate(row["name"], (row[key], row["perplexity"]), textcoords="offset points", xytext=(5, 4),
                            fontsize=8)
    ax_size.set_xlabel("size on disk (MB)")
    ax_speed.set_xlabel("output tokens/s, 16 concurrent requests (vLLM CPU)")
    for ax in (ax_size, ax_speed):
        ax.set_ylabel("held-out perplexity (lower is better)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Compression: quality vs size vs speed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
