"""Built-in chat prompt sets, deterministic, for workloads whose text matters (speculative decoding).

- `copy`: customer-service messages the assistant must copy into a ticket (the reply repeats its input: order
  numbers, names, addresses); where n-gram speculation (prompt lookup) pays most.
- `translate`: English sentences to translate into French (shares names and numbers with the prompt, little else).
- `chat`: open questions (the answer shares almost nothing with the prompt).

Each set is a list of chat message lists; `loadtest` takes one with `--prompt-set NAME` (endpoint chat).
"""

from __future__ import annotations

import itertools

_NAMES = ["Maria Gonzalez", "James Okafor", "Li Wei", "Priya Raman", "Tom Becker", "Aiko Tanaka", "Sara Lindqvist",
          "Omar Haddad"]
_ITEMS = [("blue ceramic teapot", "the lid was cracked and the handle was loose"),
          ("pair of running shoes", "the left shoe is a size smaller than the right one"),
          ("wireless keyboard", "three keys do not respond and the battery cover is missing"),
          ("winter jacket", "the zipper broke the first time I used it"),
          ("coffee grinder", "it makes a grinding noise but the beans stay whole"),
          ("set of bath towels", "two towels arrived with a large bleach stain"),
          ("desk lamp", "the switch sparks when I turn it on"),
          ("garden hose", "it leaks at the connector even when tightened")]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "Monday"]
_STREETS = ["12 Elm Street, Springfield", "48 Harbour Road, Portsmouth", "7 Kings Lane, Leeds",
            "230 Pine Avenue, Denver", "5 Rue Verte, Lyon", "91 Maple Drive, Toronto", "16 Bridge Street, Cork",
            "3 Station Road, Bath"]

_TOPICS = ["a lighthouse keeper", "a robot learning to paint", "the first day at a new school", "a city under snow",
           "a lost dog finding its way home", "a baker who wakes up at 3 a.m.", "two friends on a long train ride",
           "a garden on the roof of a hospital"]
_QUESTIONS = ["Why is the sky blue?", "How do vaccines work?", "What makes a good team leader?",
              "How does a refrigerator keep food cold?", "Why do leaves change colour in autumn?",
              "What is the difference between weather and climate?", "How do airplanes stay in the air?",
              "Why do we need sleep?"]

_SENTENCES = ["The train to Paris leaves at nine o'clock from platform four.",
              "My sister lives in a small house near the river with two cats.",
              "Please send the signed contract to our office before Friday.",
              "The museum is closed on Mondays but open late on Thursdays.",
              "We ordered three pizzas, a salad and a bottle of water for the table.",
              "The weather will be sunny in the morning and rainy in the afternoon.",
              "Our meeting with the new client has moved to Wednesday at two.",
              "He forgot his umbrella at the restaurant and had to walk home in the rain."]


def _customer_message(index: int) -> str:
    item, problem = _ITEMS[index % len(_ITEMS)]
    name = _NAMES[index % len(_NAMES)]
    order = f"{88213 + 7919 * index:05d}-{chr(65 + index % 26)}{chr(88 - index % 20)}"
    return (f"Hello, my order number is {order} and it arrived damaged on {_DAYS[index % len(_DAYS)]}. The "
            f"{item} I bought is faulty: {problem}. I paid with my card ending {4471 + 37 * index} and would like a "
            f"replacement shipped to {_STREETS[(index * 3) % len(_STREETS)]}, as soon as possible. Thanks, {name}.")


_COPY_EXAMPLE = "Hi, my parcel 5521-QT never arrived. Please refund it to my card. Thanks, Ann."


def copy_set(size: int = 16) -> list[list[dict]]:
    # One worked example first: the default model then copies 12 of the 16 messages word for word.
    return [[{"role": "user", "content": f"Repeat: {_COPY_EXAMPLE}"},
             {"role": "assistant", "content": _COPY_EXAMPLE},
             {"role": "user", "content": f"Repeat: {_customer_message(i)}"}] for i in range(size)]


def translate_set(size: int = 16) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Translate into French:\n\n{_SENTENCES[i % len(_SENTENCES)]}"}]
            for i in range(size)]


def chat_set(size: int = 16) -> list[list[dict]]:
    prompts = itertools.cycle(f"Write a short story about {t}." if i % 2 == 0 else q
                              for i, (t, q) in enumerate(zip(_TOPICS, _QUESTIONS)))
    return [[{"role": "user", "content": next(prompts)}] for _ in range(size)]


PROMPT_SETS = {"copy": copy_set, "translate": translate_set, "chat": chat_set}


def prompt_set(name: str, size: int = 16) -> list[list[dict]]:
    try:
        return PROMPT_SETS[name](size)
    except KeyError:
        raise ValueError(f"unknown prompt set {name!r}; known: {sorted(PROMPT_SETS)}") from None
