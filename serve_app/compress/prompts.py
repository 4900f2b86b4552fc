"""Fixed prompt set for greedy agreement and answer checks (pure data)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FactPrompt:
    question: str
    # The answer counts as right if any of these appears in it (case-insensitive).
    expected: tuple[str, ...]


FACT_PROMPTS = (
    FactPrompt("What is the capital of France?", ("Paris",)),
    FactPrompt("What is the capital of Japan?", ("Tokyo",)),
    FactPrompt("What is the largest planet in our solar system?", ("Jupiter",)),
    FactPrompt("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    FactPrompt("What is the chemical formula of water?", ("H2O", "H₂O")),
    FactPrompt("How many days are there in a week?", ("seven", "7")),
    FactPrompt("What is the boiling point of water at sea level in degrees Celsius?", ("100",)),
    FactPrompt("On which continent is Egypt?", ("Africa",)),
    FactPrompt("What is the capital of Italy?", ("Rome",)),
    FactPrompt("What is the capital of Germany?", ("Berlin",)),
    FactPrompt("What is the capital of Spain?", ("Madrid",)),
    FactPrompt("What is the capital of the United Kingdom?", ("London",)),
    FactPrompt("What color is the sky on a clear day?", ("blue",)),
    FactPrompt("How many legs does a spider have?", ("eight", "8")),
    FactPrompt("Which planet is known as the Red Planet?", ("Mars",)),
    FactPrompt("What gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "CO2", "CO₂")),
    FactPrompt("Who painted the Mona Lisa?", ("Leonardo", "Vinci")),
    FactPrompt("What is the largest ocean on Earth?", ("Pacific",)),
    FactPrompt("What is two plus two?", ("four", "4")),
    FactPrompt("What language is spoken in Brazil?", ("Portuguese",)),
    FactPrompt("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    FactPrompt("What is the freezing point of water in degrees Celsius?", ("0 degrees", "0°", "0 °", "zero")),
    FactPrompt("Which animal is known as the king of the jungle?", ("lion",)),
    FactPrompt("What is the tallest mountain in the world?", ("Everest",)),
)

# Prompts for the speed runs: distinct, so the prefix cache does not turn concurrent prefills into hits.
SPEED_TOPICS = (
    "the ocean", "a mountain village", "a robot", "the moon", "a lost cat", "an old clock", "a storm",
    "a library", "a train journey", "a garden", "a lighthouse", "a winter morning", "a market",
    "a bridge", "a violin", "a desert", "a comet", "a forest", "a baker", "a river",
)


def is_correct(answer: str, prompt: FactPrompt) -> bool:
    """An expected answer appears at the start of a word: "African" counts for "Africa", but "100 degrees" does
    not count for "0 degrees", "18.0°" not for "0°", "million" not for "lion", "1H2O" not for "H2O"."""
    lowered = answer.lower()
    return any(re.search(r"(?<![\w.])" + re.escape(expected.lower()), lowered) for expected in prompt.expected)
