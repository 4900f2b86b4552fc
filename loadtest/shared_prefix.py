"""The `shared-prefix` workload: many conversations over a few long system prompts (prefix caching and
prefix-aware routing).

`--system-prompts N` distinct system prompts of about `--system-prompt-tokens T` tokens each (4 characters per
token; the server's usage.prompt_tokens gives the true count), built deterministically from `--seed`, each
distinct from its first sentence on. Conversation j uses system prompt j mod N and sends `--turns` short user
turns. The runner carries every turn forward with the assistant reply the server actually sent, so each request
repeats the system prompt and all earlier turns of its conversation: the prefix a replica's KV cache can hold.
"""

from __future__ import annotations

import random

from loadtest.config import LoadTestConfig
from loadtest.jobs import Job, Turn, spread

NAME = "shared-prefix"
CHARS_PER_TOKEN = 4

_ASSISTANTS = ["Ada", "Basil", "Cora", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kemal", "Lena"]
_COMPANIES = ["Northwind Outfitters", "Bluepeak Telecom", "Harbor Home Insurance", "Copperleaf Books",
              "Meridian Rail", "Sunfield Grocers", "Atlas Cloud Hosting", "Riverside Clinic", "Orbit Bikes",
              "Lumen Energy", "Pinecrest Bank", "Vantage Travel"]
_PRODUCTS = ["premium plan", "starter kit", "annual subscription", "gift card", "replacement part", "express delivery",
             "family bundle", "extended warranty", "student discount", "loyalty membership", "travel adapter",
             "installation service"]
_CITIES = ["Lisbon", "Oslo", "Denver", "Nairobi", "Osaka", "Porto", "Leeds", "Quebec", "Tallinn", "Perth", "Austin",
           "Lyon"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_RULES = [
    "Customers may return the {product} within {n} days of delivery if it is unused and in its original packaging.",
    "Refunds for the {product} go back to the original payment method within {n} business days.",
    "Our {city} office is open from {h}:00 to {h2}:00 on weekdays and closed on {day}s.",
    "Never promise a delivery date for the {product}; quote the usual range of {n} to {n2} days instead.",
    "If a customer mentions a safety problem with the {product}, apologise and escalate to a supervisor at once.",
    "The {product} costs {price} euros a month, and the first {n} days are free for new customers.",
    "Always confirm the order number before discussing the {product}, and never read out full card numbers.",
    "Customers in {city} can collect the {product} from our depot after {h} a.m. on {day}.",
    "A discount of {pct} percent applies to the {product} when it is ordered together with another item.",
    "When the {product} arrives damaged, ask for a photo and offer a replacement or a refund of {pct} percent.",
    "Keep answers short, friendly and plain, and end by asking whether anything else is needed.",
    "Support for the {product} by phone is available on {day}s between {h}:00 and {h2}:00, {city} time.",
]
_QUESTIONS = [
    "Hi, my order number is {order}. Where is my {product}?",
    "Can I return the {product} I bought last week?",
    "How long does a refund take for the {product}?",
    "Is your {city} office open on {day}?",
    "Do you have a discount on the {product}?",
    "The {product} arrived damaged. What can you do?",
    "Can I collect the {product} in {city} instead?",
    "How much is the {product} per month?",
    "Thanks. Anything else I should know?",
    "Could you summarise what you just told me?",
]


def system_prompt(index: int, num_tokens: int, seed: int) -> str:
    """System prompt `index` of about `num_tokens` tokens; the same text for the same arguments in any process."""
    rng = random.Random(f"shared-prefix:{seed}:{index}")
    assistant = _ASSISTANTS[index % len(_ASSISTANTS)]
    company = _COMPANIES[(index // len(_ASSISTANTS)) % len(_COMPANIES)]
    sentences = [f"You are {assistant}, the customer-service assistant of {company} (policy book {index + 1})."]
    length = len(sentences[0])
    while length < num_tokens * CHARS_PER_TOKEN:
        sentence = _fill(rng.choice(_RULES), rng)
        sentences.append(sentence)
        length += 1 + len(sentence)
    return " ".join(sentences)


def user_turns(num_turns: int, rng: random.Random) -> list[str]:
    """`num_turns` (>= 1) short user messages, the first with an order number, no two in a row alike."""
    order = f"{rng.randint(10_000, 99_999)}-{rng.choice('ABCDEFGHJK')}"
    turns = [_fill(_QUESTIONS[0], rng, order=order)]
    previous = 0
    while len(turns) < num_turns:
        previous = rng.choice([i for i in range(1, len(_QUESTIONS)) if i != previous])
        turns.append(_fill(_QUESTIONS[previous], rng))
    return turns


def shared_prefix_jobs(config: LoadTestConfig, num_jobs: int) -> list[Job]:
    """`num_jobs` conversations over `config.system_prompts` system prompts, deterministic from `config.seed`."""
    prompts = [system_prompt(i, config.system_prompt_tokens, config.seed) for i in range(config.system_prompts)]
    rng = random.Random(config.seed)
    jobs = []
    for job_id in range(num_jobs):
        turns = tuple(Turn(text=text, max_tokens=spread(config.max_tokens, config.output_tokens_range, rng))
                      for text in user_turns(config.turns, rng))
        history = ({"role": "system", "content": prompts[job_id % len(prompts)]},)
        jobs.append(Job(job_id=job_id, turns=turns, history=history))
    return jobs


def _fill(template: str, rng: random.Random, **fixed: str) -> str:
    h = rng.randint(7, 10)
    values = {"product": rng.choice(_PRODUCTS), "city": rng.choice(_CITIES), "day": rng.choice(_DAYS),
              "n": rng.randint(3, 30), "n2": rng.randint(31, 60), "h": h, "h2": h + rng.randint(6, 9),
              "pct": rng.choice([5, 10, 15, 20, 25]), "price": f"{rng.randint(4, 99)}.{rng.randint(0, 99):02d}"}
    return template.format(**values, **fixed)
