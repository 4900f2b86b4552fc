"""Incremental detokenization that is right when a multi-byte character spans several tokens.

Decodes a small window of already-emitted tokens plus the new ones and emits only the text that is
new and complete. A trailing U+FFFD means the last token ended inside a UTF-8 sequence: that text is
held back until the next token completes it (or until `flush()` at the end of the stream).
"""

from __future__ import annotations

from typing import Protocol, Sequence

# Tokens of context decoded before the new ones, so a tokenizer that drops a leading space at the
# start of a decode (SentencePiece) still yields it mid-stream.
CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Decoder, context_ids: Sequence[int] = (), skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._token_ids: list[int] = list(context_ids[-CONTEXT_TOKENS:])
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = len(self._token_ids)  # tokens before this are already emitted as text

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)

    def push(self, new_ids: Sequence[int]) -> str:
        """Add generated token ids; return the newly completed text (may be "")."""
        if not new_ids:
            return ""
        self._token_ids.extend(new_ids)
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._token_ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR):
            return ""
        delta = full_text[len(prefix_text) :]
        # The tokens emitted last become the next window's context.
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        self._trim()
        return delta

    def flush(self) -> str:
        """Return whatever text is still held back (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._token_ids[self._prefix_offset :])
        self._read_offset = len(self._token_ids)
        return full_text[len(prefix_text) :] if len(full_text) > len(prefix_text) else ""

    def _trim(self) -> None:
        # Keep memory bounded on long generations: only the decode window matters.
        if self._prefix_offset > 4 * CONTEXT_TOKENS:
            drop = self._prefix_offset
            del self._token_ids[:drop]
            self._prefix_offset -= drop
            self._read_offset -= drop
