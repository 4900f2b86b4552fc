"""Malformed transport never stalls other clients: bodies shorter than declared, trickled headers and bodies,
huge headers and a nested-JSON bomb, all held open at once against the tiny model's app, while a well-behaved
client's requests are answered as usual. Each hostile request gets its 4xx in the OpenAI error format (408 for
bodies that never arrive, 431 for the headers, 400 for the bomb), never a 5xx or a hang."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import TINY_BODY_TIMEOUT_S

pytestmark = pytest.mark.integration

GOOD = {"prompt": "Hello", "max_tokens": 4, "temperature": 0}


def _connect(base_url: str) -> tuple[socket.socket, str, str]:
    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=TINY_BODY_TIMEOUT_S + 30)
    return sock, url.hostname, url.path


def _head(path: str, host: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path}/v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def _status(sock: socket.socket) -> int | None:
    """The status code of the answer, or None when the server closed the connection without one."""
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, socket.timeout):
        return None
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


def short_body(base_url):
    sock, host, path = _connect(base_url)
    sock.sendall(_head(path, host, 1000) + b'{"prompt": "hi"')  # 15 of 1000 bytes, then silence
    return sock


def _answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def trickled_body(base_url, stop: threading.Event):
    sock, host, path = _connect(base_url)
    sock.sendall(_head(path, host, 1000))
    while not stop.wait(0.5) and not _answered(sock):
        try:
            sock.sendall(b" ")
        except OSError:
            break
    return sock


def trickled_headers(base_url, stop: threading.Event):
    sock, host, path = _connect(base_url)
    for byte in _head(path, host, 10):
        if stop.wait(0.1) or _answered(sock):
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
    return sock


def huge_headers(base_url):
    sock, host, path = _connect(base_url)
    body = json.dumps(GOOD).encode()
    sock.sendall(_head(path, host, len(body), extra=f"X-Padding: {'a' * 200_000}\r\n") + body)
    return sock


def json_bomb(base_url):
    sock, host, path = _connect(base_url)
    body = b'{"prompt": ' + b"[" * 400_000 + b"]" * 400_000 + b"}"
    sock.sendall(_head(path, host, len(body)) + body)
    return sock


def test_hostile_transport_never_stalls_other_clients(tiny_app_url):
    stop = threading.Event()
    statuses: dict[str, list] = {}
    lock = threading.Lock()

    def attack(name, make):
        start = time.monotonic()
        try:
            sock = make()
            sock.settimeout(TINY_BODY_TIMEOUT_S + 30)
            status = _status(sock)
            sock.close()
        except OSError as exc:  # the server refused or reset the connection: an answer too
            status = type(exc).__name__
        with lock:
            statuses.setdefault(name, []).append((status, time.monotonic() - start))

    attacks = [("short_body", lambda: short_body(tiny_app_url)),
               ("trickled_body", lambda: trickled_body(tiny_app_url, stop)),
               ("trickled_headers", lambda: trickled_headers(tiny_app_url, stop)),
               ("huge_headers", lambda: huge_headers(tiny_app_url)),
               ("json_bomb", lambda: json_bomb(tiny_app_url))]
    threads = [threading.Thread(target=attack, args=a, daemon=True) for a in attacks for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        latencies = []
        with httpx.Client(timeout=30) as client:
            for _ in range(5):  # the well-behaved client, while all of the above are open
                start = time.monotonic()
                response = client.post(f"{tiny_app_url}/v1/completions", json=GOOD)
                latencies.append(time.monotonic() - start)
                assert response.status_code == 200, response.text[:300]
        assert max(latencies) < 10, latencies
        for thread in threads:
            thread.join(timeout=TINY_BODY_TIMEOUT_S + 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    # Bodies that never arrive in full: 408 from the ingress, after its body timeout and not much later.
    for name in ("short_body", "trickled_body"):
        for status, seconds in statuses[name]:
            assert status == 408 and seconds < TINY_BODY_TIMEOUT_S + 10, (name, statuses[name])
    # The bomb: a clean 4xx (too deep, or too large); huge headers: 431 (admission.max_header_bytes).
    assert all(isinstance(status, int) and 400 <= status < 500 for status, _ in statuses["json_bomb"]), statuses
    assert all(status == 431 for status, _ in statuses["huge_headers"]), statuses["huge_headers"]
    assert httpx.get(f"{tiny_app_url}/health", timeout=20).status_code == 200
