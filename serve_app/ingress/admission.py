"""Admission control: a bounded number of requests in flight; beyond it, a fast 429.

Pure and synchronous (the ingress runs one event loop per replica, so no locks are needed).
"""

from __future__ import annotations

from serve_app.api.errors import ServeAppError


class AdmissionController:
    def __init__(self, max_in_flight: int, retry_after_s: int = 1):
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.num_in_flight = 0
        self.num_rejected = 0

    def try_acquire(self) -> bool:
        if self.num_in_flight >= self.max_in_flight:
            self.num_rejected += 1
            return False
        self.num_in_flight += 1
        return True

    def release(self) -> None:
        self.num_in_flight = max(0, self.num_in_flight - 1)

    def overloaded_error(self) -> ServeAppError:
        return ServeAppError(
            f"The server is at capacity ({self.max_in_flight} requests in flight). Retry shortly.",
            status_code=429,
            type="rate_limit_error",
            code="server_overloaded",
            headers={"Retry-After": str(self.retry_after_s)},
        )
