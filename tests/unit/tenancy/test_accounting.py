"""Exact accounting: a request is charged an estimate when admitted, output as it passes the estimate, and what
it used when it ends; requests without max_tokens and with n > 1 are not undercharged."""

import pytest

from serve_app.api.errors import ServeAppError
from serve_app.ingress.auth import ApiKeyAuth
from serve_app.tenancy.accounting import DEFAULT_EXPECTED_OUTPUT_TOKENS, UsageCharge, expected_output_tokens


def test_n_multiplies_the_expected_output_and_no_max_tokens_is_not_free():
    assert expected_output_tokens(50, num_sequences=3) == 150
    assert expected_output_tokens(0) == DEFAULT_EXPECTED_OUTPUT_TOKENS
    assert expected_output_tokens(None, 2, mean_output_tokens=40.4) == 80


def test_output_past_the_estimate_is_charged_as_it_comes_and_the_end_settles_exactly():
    charge = UsageCharge(prompt_tokens=100, output_tokens=20)
    assert charge.generated(15) == 0
    assert charge.generated(10) == 5  # 25 generated, 20 charged: 5 now
    assert charge.generated(5) == 5
    assert charge.charged_tokens == 130
    # The model server counted 160 prompt tokens (the chat template), and 30 output tokens came.
    assert charge.settle(160, 30) == 60
    assert charge.charged_tokens == 190
    assert charge.settle(1, 1) == 0 and charge.generated(100) == 0  # settled once


def test_a_request_that_ends_early_gets_its_unused_estimate_back():
    charge = UsageCharge(prompt_tokens=100, output_tokens=200)
    assert charge.settle(None, 10) == -190  # prompt count unknown: the estimate stands


def test_auth_limits_are_corrected_by_what_a_request_used():
    auth = ApiKeyAuth({"d"}, requests_per_minute=2, tokens_per_minute=1000)
    auth.admit("d", 900, now_s=0.0)
    auth.adjust("d", -800)  # it used 100
    auth.admit("d", 800, now_s=1.0)  # fits now
    auth.adjust("d", 0, num_requests=-1)  # refused later by tenancy: not counted
    auth.admit("d", 50, now_s=2.0)
    with pytest.raises(ServeAppError):  # 2 requests counted in this minute
        auth.admit("d", 1, now_s=3.0)
