"""The shared-prefix workload: a few long system prompts, short user turns, conversations that share prefixes."""

import itertools
import subprocess
import sys

import pytest

from loadtest.cli import build_parser, config_from_args
from loadtest.config import LoadTestConfig
from loadtest.experiment import run_experiment
from loadtest.shared_prefix import CHARS_PER_TOKEN, system_prompt
from loadtest.workload import PromptFactory, build_jobs
from tests.unit.loadtest.fake_openai_server import server_state


def shared_config(**overrides):
    values = {"endpoint": "chat", "prompt_set": "shared-prefix", "num_requests": 24, "system_prompts": 8,
              "system_prompt_tokens": 1000, "turns": 3, "max_tokens": 16, "seed": 3}
    return LoadTestConfig(**(values | overrides))


def test_jobs_share_n_distinct_long_system_prompts():
    jobs = build_jobs(shared_config(), PromptFactory(), 24)
    systems = [job.history[0]["content"] for job in jobs]
    assert all(job.history[0]["role"] == "system" and len(job.history) == 1 for job in jobs)
    assert len(set(systems)) == 8 and systems[:8] == systems[8:16] == systems[16:]
    for text in set(systems):
        assert 1000 * CHARS_PER_TOKEN <= len(text) < 1000 * CHARS_PER_TOKEN + 200
    # Distinct from the first sentence on, so no two share even a first cache block.
    assert len({text[:60] for text in systems}) == 8


def test_user_turns_are_short_and_differ_between_conversations():
    jobs = build_jobs(shared_config(), PromptFactory(), 24)
    assert all(len(job.turns) == 3 for job in jobs)
    assert all(len(turn.text) < 120 and turn.max_tokens == 16 for job in jobs for turn in job.turns)
    assert all(job.turns[0].text.startswith("Hi, my order number is") for job in jobs)
    assert len({job.turns[0].text for job in jobs}) == 24
    assert all(a.text != b.text for job in jobs for a, b in itertools.pairwise(job.turns))


def test_deterministic_from_the_seed_and_sized_by_the_flags():
    assert build_jobs(shared_config(), PromptFactory(), 24) == build_jobs(shared_config(), PromptFactory(), 24)
    assert build_jobs(shared_config(seed=4), PromptFactory(), 2) != build_jobs(shared_config(), PromptFactory(), 2)
    small = build_jobs(shared_config(system_prompts=2, system_prompt_tokens=50, turns=1), PromptFactory(), 5)
    assert len({job.history[0]["content"] for job in small}) == 2 and all(len(job.turns) == 1 for job in small)
    assert all(len(job.history[0]["content"]) < 50 * CHARS_PER_TOKEN + 200 for job in small)


def test_system_prompts_are_the_same_in_another_process():
    code = "from loadtest.shared_prefix import system_prompt; print(system_prompt(5, 300, 7))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "999", "PATH": ""}).stdout.rstrip("\n")
    assert other == system_prompt(5, 300, 7)


def test_cli_flags_and_validation():
    args = build_parser().parse_args(["run", "--endpoint", "chat", "--prompt-set", "shared-prefix",
                                      "--system-prompts", "4", "--system-prompt-tokens", "500", "--turns", "5",
                                      "--num-requests", "10"])
    config = config_from_args(args)
    assert (config.prompt_set, config.system_prompts, config.system_prompt_tokens, config.turns) == \
        ("shared-prefix", 4, 500, 5)
    with pytest.raises(ValueError, match="endpoint 'chat'"):
        LoadTestConfig(prompt_set="shared-prefix", num_requests=1)
    with pytest.raises(ValueError):
        shared_config(system_prompts=0)


def test_each_turn_extends_the_previous_request(fake_url):
    config = shared_config(base_url=fake_url, model="fake-model", concurrency=1, num_requests=2, turns=3,
                           system_prompts=2, system_prompt_tokens=100)
    before = server_state(fake_url)["num_requests_seen"]
    result = run_experiment(config, progress=False)
    bodies = server_state(fake_url)["bodies"][before:]
    assert result["summary"]["num_ok"] == 6 and len(bodies) == 6
    for conversation in (bodies[:3], bodies[3:]):
        assert [[m["role"] for m in body["messages"]] for body in conversation] == [
            ["system", "user"], ["system", "user", "assistant", "user"],
            ["system", "user", "assistant", "user", "assistant", "user"]]
        for earlier, later in itertools.pairwise(conversation):
            assert later["messages"][:len(earlier["messages"])] == earlier["messages"]
        # The assistant turns carried forward are the replies the server sent.
        assert conversation[1]["messages"][2]["content"].startswith(" tok0")
    assert bodies[0]["messages"][0] != bodies[3]["messages"][0]  # conversation j uses system prompt j mod N
