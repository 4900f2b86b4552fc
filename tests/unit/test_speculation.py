"""Speculative decoding: the measured `auto` schedule, the config -> vLLM mapping, and reading its counters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loadtest.config import LoadTestConfig
from loadtest.prompt_sets import prompt_set
from loadtest.server_metrics import parse_speculation, speculation_delta
from loadtest.workload import PromptFactory, build_jobs
from serve_app.config import AppConfig, SpeculationConfig
from serve_app.server.engine_args import engine_kwargs
from serve_app.server.speculation import choose_schedule, schedule_k_at, speculative_config


def _table(rows):
    """{(set, batch): {k: tok/s}} -> the flat mapping choose_schedule reads."""
    return {(s, b, k): v for (s, b), by_k in rows.items() for k, v in by_k.items()}


def test_schedule_picks_the_best_k_that_slows_no_prompt_set_and_turns_off_where_none_pays():
    table = _table({
        ("copy", 1): {0: 16, 2: 30, 4: 48, 8: 60}, ("chat", 1): {0: 16, 2: 17, 4: 16.8, 8: 15.0},  # k=8 slows chat
        ("copy", 4): {0: 60, 2: 90, 4: 100, 8: 110}, ("chat", 4): {0: 60, 2: 60, 4: 59, 8: 50},
        ("copy", 16): {0: 200, 2: 230, 4: 240, 8: 250}, ("chat", 16): {0: 200, 2: 190, 4: 180, 8: 150},
    })
    schedule = choose_schedule(table, floor=0.97)
    assert schedule_k_at(schedule, 1) == 4  # k=8 is faster on copy but chat falls to 0.94x
    assert schedule_k_at(schedule, 4) == 4
    assert schedule_k_at(schedule, 5) == 0  # between 4 (k=4) and 16 (off) nothing measured says it pays
    assert schedule_k_at(schedule, 16) == 0
    assert schedule_k_at(schedule, 1000) == 0  # past the largest measured size: off
    assert schedule == [(1, 4, 4), (5, 1 << 20, 0)]


def test_schedule_between_measured_sizes_takes_the_smaller_choice_and_starts_at_one():
    table = _table({("copy", 2): {0: 10, 2: 15, 4: 20}, ("copy", 8): {0: 10, 2: 12, 4: 11}})
    schedule = choose_schedule(table)
    assert schedule[0][0] == 1 and schedule_k_at(schedule, 1) == 4
    assert schedule_k_at(schedule, 3) == 2 and schedule_k_at(schedule, 8) == 2 and schedule_k_at(schedule, 9) == 0
    vllm_ranges_are_contiguous = all(a[1] + 1 == b[0] for a, b in zip(schedule, schedule[1:]))
    assert vllm_ranges_are_contiguous


def test_auto_default_maps_to_ngram_with_the_measured_batch_size_schedule():
    config = AppConfig()
    assert config.engine.speculation.mode == "auto"
    spec = speculative_config(config.engine.speculation)
    assert spec["method"] == "ngram"
    assert spec["num_speculative_tokens_per_batch_size"] == list(map(tuple, config.engine.speculation.auto_schedule))
    assert spec["num_speculative_tokens"] == max(k for _, _, k in config.engine.speculation.auto_schedule)
    assert engine_kwargs(config, "/models/m")["speculative_config"] == spec


def test_off_ngram_and_draft_model_modes():
    assert speculative_config(SpeculationConfig(mode="off")) is None
    assert speculative_config(SpeculationConfig(mode="ngram", num_speculative_tokens=6)) == {
        "method": "ngram", "num_speculative_tokens": 6, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    assert speculative_config(SpeculationConfig(mode="draft_model", draft_model="/m/draft")) == {
        "method": "draft_model", "model": "/m/draft", "num_speculative_tokens": 4}
    # A schedule measured never to pay turns speculation off rather than asking vLLM for k = 0 everywhere.
    assert speculative_config(SpeculationConfig(auto_schedule=[(1, 1 << 20, 0)])) is None


@pytest.mark.parametrize("bad", [
    {"mode": "eagle"},  # needs a draft model
    {"prompt_lookup_min": 5, "prompt_lookup_max": 3},
    {"auto_schedule": [(2, 8, 4)]},  # must start at batch size 1
    {"auto_schedule": [(1, 4, 4), (6, 8, 0)]},  # gap
    {"auto_schedule": []},
])
def test_bad_speculation_configs_are_refused_at_load(bad):
    with pytest.raises(ValidationError):
        AppConfig.model_validate({"engine": {"speculation": bad}})


def test_a_bare_yaml_off_means_off(tmp_path):
    from serve_app.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("engine: {speculation: {mode: off}}\n")  # YAML 1.1 reads `off` as false
    assert load_config(path).engine.speculation.mode == "off"


def test_extra_engine_args_can_still_override_the_speculative_config():
    config = AppConfig.model_validate({"engine": {"extra_engine_args": {"speculative_config": None}}})
    assert engine_kwargs(config, "/m")["speculative_config"] is None


SERVE_APP_METRICS = """# TYPE serve_app_spec_decode_drafts counter
serve_app_spec_decode_drafts_total{model="m"} 10.0
# TYPE serve_app_spec_decode_draft_tokens counter
serve_app_spec_decode_draft_tokens_total{model="m"} 40.0
# TYPE serve_app_spec_decode_accepted_tokens counter
serve_app_spec_decode_accepted_tokens_total{model="m"} 30.0
"""
VLLM_METRICS = """# TYPE vllm:spec_decode_num_drafts counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 4.0
# TYPE vllm:spec_decode_num_draft_tokens counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 16.0
# TYPE vllm:spec_decode_num_accepted_tokens counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 8.0
"""


def test_loadtest_reads_speculation_counters_of_serve_app_and_of_bare_vllm():
    before = parse_speculation(SERVE_APP_METRICS.replace("10.0", "2.0").replace("40.0", "8.0").replace("30.0", "6.0"))
    delta = speculation_delta(before, parse_speculation(SERVE_APP_METRICS))
    assert delta["drafts"] == 8 and delta["acceptance_rate"] == 24 / 32 and delta["tokens_per_step"] == 1 + 24 / 8
    assert parse_speculation(VLLM_METRICS) == {"drafts": 4, "draft_tokens": 16, "accepted_tokens": 8}
    assert parse_speculation("# nothing here\n") is None
    assert speculation_delta(None, parse_speculation(VLLM_METRICS)) is None


def test_prompt_sets_are_deterministic_chat_conversations():
    for name in ("copy", "translate", "chat"):
        first, second = prompt_set(name, 5), prompt_set(name, 5)
        assert first == second and len(first) == 5 and first[0][-1]["role"] == "user"
    copies = prompt_set("copy", 8)
    assert len({c[-1]["content"] for c in copies}) == 8  # distinct messages, not one repeated
    config = LoadTestConfig(endpoint="chat", prompt_set="copy", num_requests=3)
    jobs = build_jobs(config, PromptFactory(), 3)
    assert jobs[0].history == tuple(copies[0][:-1]) and jobs[0].turns[0].text == copies[0][-1]["content"]
    with pytest.raises(ValidationError):
        LoadTestConfig(endpoint="completions", prompt_set="copy", num_requests=3)
