"""The per-request record: raw timestamps, from which every metric derives.

All times are seconds from the run start on one monotonic clock (several
client processes share the start instant, see runner). Keeping raw samples,
not per-process summaries, is what lets several processes be merged
correctly: percentiles are computed once, over the union.
"""

from dataclasses import asdict, dataclass, field


@dataclass
class RequestRecord:
    request_id: int
    job_id: int
    turn: int
    worker_id: int
    # Open loop: when the schedule said the request should start. None in closed loop.
    scheduled_s: float | None
    # Just before the HTTP request is handed to aiohttp (after any in-flight slot wait).
    send_s: float
    # First read that carried generated text; None when no text came.
    first_text_s: float | None = None
    # Stream end ([DONE] or connection close) or failure.
    done_s: float | None = None
    status_code: int | None = None
    # None when the request succeeded; otherwise a short category, see error_kind.
    error_kind: str | None = None
    error: str | None = None
    max_tokens: int = 0
    expected_input_tokens: int | None = None
    prompt_tokens: int | None = None
    # From the server's usage chunk (stream_options.include_usage).
    output_tokens_server: int | None = None
    # Filled in the parent: tokenizer count of the text, or number of text events.
    output_tokens_client: int | None = None
    # Arrival time of each text-bearing event, and the characters it carried.
    event_times_s: list[float] = field(default_factory=list)
    event_num_chars: list[int] = field(default_factory=list)
    num_keepalive_comments: int = 0
    finish_reason: str | None = None
    timings_ms: dict[str, float] | None = None
    output_text: str | None = None
    # Multi-tenant runs: the tenant (loadtest/tenant_spec.py) that sent the request.
    tenant: str | None = None
    # A refused request's Retry-After header (seconds), when it carried one.
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    def to_dict(self, *, keep_text: bool) -> dict:
        data = asdict(self)
        data["event_times_s"] = [round(t, 6) for t in self.event_times_s]
        if not keep_text:
            data["output_text"] = None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RequestRecord":
        return cls(**data)
