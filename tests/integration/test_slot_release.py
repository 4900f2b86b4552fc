"""Admission slots come back however a client behaves: one that never reads its stream, one that leaves without
reading. Against the tiny model's app whose admission limit is 8 (tiny_app_url): each case takes every
slot with misbehaving clients, then a well-behaved request must be admitted while those connections may still
be open."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.integration.conftest import read_gauge, send_unread_stream, wait_for_free_slots

pytestmark = pytest.mark.integration

ADMISSION_LIMIT = 8  # tiny_app_url's admission.max_in_flight_requests
BODY = json.dumps({"prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True, "temperature": 0,
                   "stream": True}).encode()


def _admitted(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 4}, timeout=60)
    assert response.status_code == 200, response.text[:300]


def test_clients_that_never_read_their_streams_give_their_slots_back(tiny_app_url):
    sockets = [send_unread_stream(tiny_app_url, BODY) for _ in range(ADMISSION_LIMIT)]
    try:
        time.sleep(1)
        assert read_gauge(tiny_app_url, "serve_app_in_flight_requests") > 0  # they were admitted
        wait_for_free_slots(tiny_app_url, timeout_s=120)  # generation ends; nobody has read a byte
        _admitted(tiny_app_url)
    finally:
        for sock in sockets:
            sock.close()


def _requests_seen(base_url: str) -> float:
    """Requests the ingress has ended, any status (0 before the first)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^serve_app_requests_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def test_clients_that_leave_without_reading_give_their_slots_back(tiny_app_url):
    """Clients gone while their streams run (the ingress has admitted them; nobody read a byte). A client that
    closes before Ray's proxy forwards its request never reaches the ingress at all; the narrower window (the
    response returned, its body not started) is the unit test in tests/unit/test_stream_lifetime.py."""
    before = _requests_seen(tiny_app_url)
    for _ in range(3):  # three rounds of the full admission limit: a leak of any would show
        sockets = [send_unread_stream(tiny_app_url, BODY) for _ in range(ADMISSION_LIMIT)]
        time.sleep(1.5)
        for sock in sockets:
            sock.close()
        wait_for_free_slots(tiny_app_url, timeout_s=60)
    assert _requests_seen(tiny_app_url) >= before + 3 * ADMISSION_LIMIT * 0.75, "the closed requests did not reach it"
    _admitted(tiny_app_url)
