"""API keys (bearer tokens), stored as SHA-256 digests, and per-key request/token rate limits."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field

from serve_app.config import AuthConfig
from serve_app.api.errors import ServeAppError

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_lines(lines: list[str]) -> set[str]:
    """`sha256:<hex>` lines are digests already; any other non-comment line is a clear key, hashed here."""
    digests = set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digests.add(line[len(HASH_PREFIX):].lower() if line.startswith(HASH_PREFIX) else hash_key(line))
    return digests


def load_key_digests(config: AuthConfig) -> set[str]:
    """Digests of the keys in `auth.api_keys_file` and `$auth.api_keys_env`; with `auth.enabled`, none is an error.

    The error names the settings, so a deployment without keys fails at start with one clear message (the CLI
    checks this before starting Ray; under `serve run` or KubeRay the ingress constructor raises it).
    """
    lines: list[str] = []
    if config.api_keys_file:
        path = os.path.expanduser(config.api_keys_file)
        try:
            with open(path) as f:
                lines.extend(f.read().splitlines())
        except OSError as exc:
            raise ValueError(f"auth.api_keys_file {config.api_keys_file!r} cannot be read: "
                             f"{exc.strerror or type(exc).__name__}") from None
    env_value = os.environ.get(config.api_keys_env, "")
    lines.extend(env_value.split(","))
    digests = parse_key_lines(lines)
    if config.enabled and not digests:
        sources = f"the environment variable {config.api_keys_env} (auth.api_keys_env) is unset or empty"
        if config.api_keys_file:
            sources = f"auth.api_keys_file {config.api_keys_file!r} has no keys and {sources}"
        raise ValueError(f"auth.enabled is true but no API keys are configured: {sources}. Set "
                         f"{config.api_keys_env} to comma-separated keys on every node, or point "
                         "auth.api_keys_file at a file with one key per line.")
    return digests


@dataclass
class _Window:
    start_s: float = 0.0
    num_requests: int = 0
    num_tokens: int = 0


@dataclass
class ApiKeyAuth:
    digests: set[str]
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    _windows: dict[str, _Window] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: AuthConfig) -> "ApiKeyAuth | None":
        if not config.enabled:
            return None
        return cls(load_key_digests(config), config.requests_per_minute, config.tokens_per_minute)

    def authenticate(self, authorization: str | None) -> str:
        """Return the caller's key digest, or raise a 401. Never logs or echoes the key."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ServeAppError(
                "Missing API key: send 'Authorization: Bearer <key>'.", status_code=401, type="authentication_error",
                code="invalid_api_key",
            )
        digest = hash_key(authorization[7:].strip())
        if not any(hmac.compare_digest(digest, known) for known in self.digests):
            raise ServeAppError("Incorrect API key provided.", status_code=401, type="authentication_error", code="invalid_api_key")
        return digest

    @property
    def has_limits(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def adjust(self, digest: str, delta_tokens: int, num_requests: int = 0) -> None:
        """Correct the key's current window: `delta_tokens` used beyond what was counted (negative: less, or a
        refused request's refund with `num_requests=-1`). Limits and tenancy compose: tenancy's gate calls this
        when it refuses or when a request ends."""
        window = self._windows.get(digest)
        if window is not None:
            window.num_requests = max(0, window.num_requests + num_requests)
            window.num_tokens = max(0, window.num_tokens + delta_tokens)

    def admit(self, digest: str, num_tokens: int, now_s: float | None = None) -> None:
        """Count one request of `num_tokens` (prompt + expected output) against the key's per-minute limits."""
        now_s = time.monotonic() if now_s is None else now_s
        window = self._windows.setdefault(digest, _Window(start_s=now_s))
        if now_s - window.start_s >= 60.0:
            window.start_s, window.num_requests, window.num_tokens = now_s, 0, 0
        retry_after = str(max(1, int(60.0 - (now_s - window.start_s))))
        if self.requests_per_minute is not None and window.num_requests + 1 > self.requests_per_minute:
            raise ServeAppError(
                f"Rate limit reached: {self.requests_per_minute} requests per minute.", status_code=429,
                type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": retry_after},
            )
        if self.tokens_per_minute is not None and window.num_tokens + num_tokens > self.tokens_per_minute:
            raise ServeAppError(
                f"Rate limit reached: {self.tokens_per_minute} tokens per minute.", status_code=429,
                type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": retry_after},
            )
        window.num_requests += 1
        window.num_tokens += num_tokens
