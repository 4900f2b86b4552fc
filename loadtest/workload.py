"""What each request asks for: prompts, turns and output lengths.

Jobs are built in the parent process from the seed, before any load starts,
so tokenization never competes with the timing loop and several client
processes share one deterministic workload.

Synthetic prompt length is counted in tokens of the prompt text alone (no
chat template, no BOS). With a tokenizer (a local Hugging Face directory,
loaded with AutoTokenizer) the length is exact up to re-tokenization at the
cut; without one, one common short English word is taken as one token, which
is within about 20% for BPE vocabularies. The server's usage.prompt_tokens in
the result shows the true count.
"""

import json
import random
from pathlib import Path

from loadtest.config import LoadTestConfig
from loadtest.jobs import Job, Turn, spread
from loadtest.shared_prefix import shared_prefix_jobs

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how their "
    "if will up other about out many then them these so some her would make like him into time has look "
    "two more write go see number no way could people my than first water been call who oil its now find "
    "long down day did get come made may part over new sound take only little work know place year live "
    "me back give most very after thing our just name good sentence man think say great where help through "
    "much before line right too mean old any same tell boy follow came want show also around form three "
    "small set put end does another well large must big even such because turn here why ask went men read "
    "need land different home us move try kind hand picture again change off play spell air away animal "
    "house point page letter mother answer found study still learn should world high every near add food "
    "between own below country plant last school father keep tree never start city earth eye light thought"
).split()

_MAX_LENGTH_FIX_STEPS = 8


class PromptFactory:
    """Makes prompt text of a given token count, exact with a tokenizer."""

    def __init__(self, tokenizer_path: str | None = None):
        self.tokenizer = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    @property
    def method(self) -> str:
        return "tokenizer" if self.tokenizer is not None else "approx_words"

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def make(self, num_tokens: int, rng: random.Random) -> str:
        words = [rng.choice(_WORDS) for _ in range(num_tokens + 8)]
        if self.tokenizer is None:
            return " ".join(words[:num_tokens])
        ids = self.tokenizer.encode(" ".join(words), add_special_tokens=False)[:num_tokens]
        text = self.tokenizer.decode(ids)
        for _ in range(_MAX_LENGTH_FIX_STEPS):
            actual = self.count_tokens(text)
            if actual == num_tokens:
                break
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if actual > num_tokens:
                text = self.tokenizer.decode(ids[:num_tokens])
            else:
                text = text + " " + rng.choice(_WORDS)
        return text


def _jobs_from_jsonl(path: str, config: LoadTestConfig, rng: random.Random, limit: int) -> list[Job]:
    """Lines: {"prompt": str} | {"messages": [...]} | {"turns": [str, ...]}; optional "max_tokens"."""
    jobs: list[Job] = []
    with Path(path).open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if len(jobs) >= limit:
                break
            if not line.strip():
                continue
            item = json.loads(line)
            max_tokens = int(item.get("max_tokens") or spread(config.max_tokens, config.output_tokens_range, rng))
            history: tuple[dict, ...] = ()
            if "turns" in item:
                texts = [str(t) for t in item["turns"]]
            elif "messages" in item:
                messages = list(item["messages"])
                if not messages or messages[-1].get("role") != "user":
                    raise ValueError(f"{path}:{line_number}: messages must end with a user message")
                history = tuple(messages[:-1])
                texts = [str(messages[-1]["content"])]
            elif "prompt" in item:
                texts = [str(item["prompt"])]
            else:
                raise ValueError(f"{path}:{line_number}: needs 'prompt', 'messages' or 'turns'")
            if config.endpoint == "completions" and (history or len(texts) > 1):
                raise ValueError(f"{path}:{line_number}: multi-message items need endpoint 'chat'")
            turns = tuple(Turn(text=t, max_tokens=max_tokens) for t in texts)
            jobs.append(Job(job_id=len(jobs), turns=turns, history=history))
    if not jobs:
        raise ValueError(f"{path}: no prompts")
    return jobs


def build_jobs(config: LoadTestConfig, factory: PromptFactory, num_jobs: int) -> list[Job]:
    """`num_jobs` jobs, deterministic from config.seed. JSONL items repeat if fewer."""
    rng = random.Random(config.seed)
    if config.prompt_set == "shared-prefix":
        return shared_prefix_jobs(config, num_jobs)
    if config.prompt_set:
        from loadtest.prompt_sets import prompt_set

        conversations = prompt_set(config.prompt_set)
        return [Job(job_id=i, history=tuple(conversations[i % len(conversations)][:-1]),
                    turns=(Turn(text=conversations[i % len(conversations)][-1]["content"],
                                max_tokens=spread(config.max_tokens, config.output_tokens_range, rng)),))
                for i in range(num_jobs)]
    if config.prompts_file:
        base = _jobs_from_jsonl(config.prompts_file, config, rng, limit=num_jobs)
        return [
            Job(job_id=i, turns=base[i % len(base)].turns, history=base[i % len(base)].history)
            for i in range(num_jobs)
        ]
    jobs = []
    for job_id in range(num_jobs):
        turns = []
        for _ in range(config.turns):
            num_tokens = spread(config.input_tokens, config.input_tokens_range, rng)
            turns.append(
                Turn(
                    text=factory.make(num_tokens, rng),
                    max_tokens=spread(config.max_tokens, config.output_tokens_range, rng),
                    expected_input_tokens=num_tokens,
                )
            )
        jobs.append(Job(job_id=job_id, turns=tuple(turns)))
    return jobs
