"""Incremental detokenization against the real tiny and default tokenizers and a byte-level fake."""

from pathlib import Path

import pytest

from serve_app.detokenizer import IncrementalDetokenizer


class ByteTokenizer:
    """One token per UTF-8 byte: the hardest case for multi-byte characters."""

    def decode(self, token_ids, skip_special_tokens=True):
        return bytes(token_ids).decode("utf-8", errors="replace")

    def encode(self, text):
        return list(text.encode("utf-8"))


def stream_text(detok, token_ids, step=1):
    pieces = []
    for i in range(0, len(token_ids), step):
        pieces.append(detok.push(token_ids[i : i + step]))
    pieces.append(detok.flush())
    return pieces


@pytest.mark.parametrize("text", ["héllo wörld", "東京は晴れ 🙂🙂", "plain ascii", "a🙂b"])
@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_multibyte_characters_split_across_tokens(text, step):
    tok = ByteTokenizer()
    pieces = stream_text(IncrementalDetokenizer(tok), tok.encode(text), step)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces), "a partial character leaked to the client"


def test_incomplete_character_at_end_is_flushed_as_replacement():
    tok = ByteTokenizer()
    detok = IncrementalDetokenizer(tok)
    assert detok.push(list("ok".encode())) == "ok"
    assert detok.push(["🙂".encode()[0]]) == ""
    assert detok.flush() == "\ufffd"


def test_long_stream_keeps_window_bounded():
    tok = ByteTokenizer()
    detok = IncrementalDetokenizer(tok)
    text = "abc" * 2000
    assert "".join(stream_text(detok, tok.encode(text))) == text
    assert len(detok._token_ids) < 50


def _hf_tokenizer(name):
    path = Path("~/.cache/serve_app/models").expanduser() / name
    if not (path / ".serve_app_ready").exists():
        pytest.skip(f"{name} not prepared (serve-app models prepare)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("name", ["tiny-llama", "SmolLM2-135M-Instruct"])
def test_matches_full_decode_with_real_tokenizer(name):
    tok = _hf_tokenizer(name)
    text = "The capital of France is Paris. Ünïcödé 東京 🙂 and   spaces\nnew line."
    ids = tok.encode(text, add_special_tokens=False)
    prompt_ids = tok.encode("Say something:", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, prompt_ids)
    assert "".join(stream_text(detok, ids)) == tok.decode(ids)
