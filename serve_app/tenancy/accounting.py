"""What a request is charged (fair share, tenant limits, the API key's limits): an estimate when it is admitted,
output charged as it is generated beyond that estimate, and the exact count when it ends. Pure.

At admission only the body is known: its prompt is estimated from its size (the model server renders the chat
template and counts the real prompt tokens; they come back at the end), its output is `n` x `max_tokens`, or
`n` x the model's measured mean output length when the request sets no `max_tokens` (a request without a bound
must not pay for its prompt only). While a stream runs, tokens beyond that estimate are charged as they come, so
an unbounded request pays while it runs; at the end the charge is set to prompt + output as counted, of either sign.
"""

from __future__ import annotations

from dataclasses import dataclass

# Expected output of a request without max_tokens until its model's mean output length has been measured.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 256


def requested_n(body: dict) -> int:
    """Sequences a checked body asks the engine for: `n` (or `best_of`, which vLLM generates in full), at least 1."""
    counts = [value for value in (body.get("n"), body.get("best_of"))
              if isinstance(value, int) and not isinstance(value, bool)]
    return max([1, *counts])


def expected_output_tokens(max_tokens: int | None, num_sequences: int = 1,
                           mean_output_tokens: float | None = None) -> int:
    """Output tokens a request is expected to produce over all its `num_sequences` (`n`): `max_tokens` each when
    set (> 0), else the measured mean (or DEFAULT_EXPECTED_OUTPUT_TOKENS)."""
    if max_tokens is not None and max_tokens > 0:
        per_sequence = max_tokens
    else:
        per_sequence = DEFAULT_EXPECTED_OUTPUT_TOKENS if mean_output_tokens is None else max(1, round(mean_output_tokens))
    return max(1, num_sequences) * per_sequence


@dataclass
class UsageCharge:
    """Tokens one request has been charged so far; the callers apply each returned delta to their ledgers."""

    prompt_tokens: int
    output_tokens: int  # charged for output: the estimate, raised as generation passes it
    num_generated_tokens: int = 0
    is_settled: bool = False

    @property
    def charged_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def generated(self, num_tokens: int) -> int:
        """`num_tokens` more were generated; returns the tokens to charge now (those past the charged output)."""
        if self.is_settled or num_tokens <= 0:
            return 0
        self.num_generated_tokens += num_tokens
        extra = max(0, self.num_generated_tokens - self.output_tokens)
        self.output_tokens += extra
        return extra

    def settle(self, prompt_tokens: int | None, output_tokens: int) -> int:
        """The request ended having used `prompt_tokens` (as the model server counted them; None: unknown, the
        estimate stands) and `output_tokens` over all its sequences; returns used - charged (of either sign).
        Only the first call counts."""
        if self.is_settled:
            return 0
        self.is_settled = True
        before = self.charged_tokens
        if prompt_tokens is not None:
            self.prompt_tokens = max(0, prompt_tokens)
        self.output_tokens = max(0, output_tokens)
        return self.charged_tokens - before
