"""Calibration and held-out text: reading the shipped files and packing token windows (pure)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CALIBRATION_FILE = DATA_DIR / "calibration.txt"
HELDOUT_FILE = DATA_DIR / "heldout.txt"


def read_documents(path: str | Path) -> list[str]:
    """Paragraphs of a text file, split on blank lines; lines starting with '#' are comments."""
    text = Path(path).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    docs, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            docs.append(" ".join(current))
            current = []
    if current:
        docs.append(" ".join(current))
    return docs


# Instructions paired with calibration paragraphs in `chat` format, so that calibration activations include the
# chat template's system prompt and role markers that every served chat request carries. Generic on purpose:
# none of them asks one of the evaluation's fact questions.
CHAT_INSTRUCTIONS = (
    "Write a short paragraph on this topic.",
    "Describe this in a few sentences.",
    "Tell me more.",
    "Can you explain it in plain words?",
    "Continue the story.",
    "Give me a short summary.",
)


def chat_messages(paragraph: str, index: int) -> list[dict[str, str]]:
    """One calibration paragraph as the assistant's reply to a generic instruction (a chat-template input)."""
    return [
        {"role": "user", "content": CHAT_INSTRUCTIONS[index % len(CHAT_INSTRUCTIONS)]},
        {"role": "assistant", "content": paragraph},
    ]


def pack_windows(doc_ids: list[list[int]], window_len: int, max_windows: int | None = None) -> list[list[int]]:
    """Concatenates token-id documents and cuts them into full windows of `window_len` ids.

    A trailing partial window is dropped unless it is the only one, so every window has the same
    length (calibration statistics and perplexity then weigh tokens evenly).
    """
    if window_len < 2:
        raise ValueError(f"window_len must be >= 2, got {window_len}")
    flat = [token_id for ids in doc_ids for token_id in ids]
    windows = [flat[start : start + window_len] for start in range(0, len(flat) - window_len + 1, window_len)]
    if not windows and flat:
        windows = [flat]
    if max_windows is not None:
        windows = windows[:max_windows]
    return windows
