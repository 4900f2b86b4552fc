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
