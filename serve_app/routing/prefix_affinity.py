"""Which replica a request goes to, from its prompt's prefix and the replicas' load. Pure: no Ray, no I/O.

A request's prompt is reduced to text (`prompt_text`), cut into blocks of `block_chars` characters and hashed as
a chain (`prefix_hashes`: hash i covers the first i + 1 blocks), so two prompts share hash i exactly when they
share their first (i + 1) * block_chars characters. `PrefixIndex` remembers which replicas were sent which
block hashes; `decide_replica` sends the request to the replica holding its longest prefix unless that replica
is more than `max_load_gap` requests busier than the least loaded one, and otherwise uses power-of-two-choices;
given each engine's batch rows (`slots`), only replicas with a free row are candidates while there are any.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_MAX_DEPTH = 8  # nesting followed inside message content and tool calls; deeper values are ignored


def prompt_text(body: Any) -> str:
    """The text a request's prompt prefix is made of, from a vLLM request object (or the same fields as a dict).

    Chat `messages`, completion `prompt` (str, list of str, token ids as their repr), Responses `instructions`
    then `input`. Each message starts with its role, so the same words from another role differ. Never raises:
    an unknown shape gives "" (or the text gathered so far), which routes by load alone.
    """
    out: list[str] = []
    try:
        messages = _field(body, "messages")
        if messages is not None:
            _flatten(_field(body, "tools"), out, "tools")
            _messages(messages, out)
            return "".join(out)
        prompt = _field(body, "prompt")
        if prompt is not None:
            _completion_prompt(prompt, out)
            return "".join(out)
        if _field(body, "prompt_embeds") is not None:
            _flatten(_field(body, "prompt_embeds"), out, "prompt_embeds")
            return "".join(out)
        instructions = _field(body, "instructions")
        if instructions is not None:
            out.append(f"\n<|instructions|>\n{instructions}")
        items = _field(body, "input")
        if isinstance(items, str):
            out.append(f"\n<|user|>\n{items}")
        elif items is not None:
            _messages(items, out)
    except Exception:  # noqa: BLE001, S110 - routing must never fail a request; partial text only weakens affinity
        pass
    return "".join(out)


def prefix_hashes(text: str, block_chars: int, *, salt: str = "") -> list[int]:
    """Chained 64-bit hashes of the full `block_chars`-character blocks of `text` (a partial last block is left out).

    Hash i covers text[: (i + 1) * block_chars]; `salt` (e.g. a LoRA adapter's name) starts the chain, so the same
    text under another salt shares no hash. blake2b, so the values are the same in every process.
    """
    if block_chars <= 0:
        raise ValueError(f"block_chars must be positive, got {block_chars}")
    previous = hashlib.blake2b(salt.encode("utf-8", "surrogatepass"), digest_size=8).digest() if salt else b""
    hashes = []
    for start in range(0, len(text) - block_chars + 1, block_chars):
        block = text[start:start + block_chars].encode("utf-8", "surrogatepass")
        previous = hashlib.blake2b(previous + block, digest_size=8).digest()
        hashes.append(int.from_bytes(previous, "little"))
    return hashes


class PrefixIndex:
    """Block hash -> replicas that were sent a prompt with that prefix; at most `max_tracked_blocks` hashes.

    The least recently recorded hash is forgotten first. A prompt's blocks are touched last-to-first, so its first
    blocks (shared by most later prompts) are the most recent and outlive its tail.
    """

    def __init__(self, max_tracked_blocks: int):
        if max_tracked_blocks < 1:
            raise ValueError(f"max_tracked_blocks must be >= 1, got {max_tracked_blocks}")
        self.max_tracked_blocks = max_tracked_blocks
        # Values are insertion-ordered sets (dicts with None values) of replica ids.
        self._holders: OrderedDict[int, dict[Hashable, None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def record(self, hashes: list[int], replica_id: Hashable) -> None:
        """Remember that `replica_id` was sent a prompt with these chained block hashes."""
        for block_hash in reversed(hashes):
            holders = self._holders.get(block_hash)
            if holders is None:
                holders = self._holders[block_hash] = {}
            else:
                self._holders.move_to_end(block_hash)
            holders[replica_id] = None
        while len(self._holders) > self.max_tracked_blocks:
            self._holders.popitem(last=False)

    def match(self, hashes: list[int]) -> dict[Hashable, int]:
        """Replica id -> number of leading blocks of `hashes` it holds without a gap (replicas holding none absent)."""
        matched: dict[Hashable, int] = {}
        for depth, block_hash in enumerate(hashes):
            holders = self._holders.get(block_hash)
            if not holders:
                break
            advanced = False
            for replica_id in holders:
                if matched.get(replica_id, 0) == depth:
                    matched[replica_id] = depth + 1
                    advanced = True
            if not advanced:
                break
        return matched

    def forget_replicas(self, replica_ids: Iterable[Hashable]) -> None:
        """Drop replicas that are gone (one pass over the index)."""
        gone = set(replica_ids)
        if not gone:
            return
        for block_hash in list(self._holders):
            holders = self._holders[block_hash]
            for replica_id in gone.intersection(holders):
                del holders[replica_id]
            if not holders:
                del self._holders[block_hash]

    def forget_replica(self, replica_id: Hashable) -> None:
        self.forget_replicas((replica_id,))


class RoutingReason(str, enum.Enum):
    PREFIX_HIT = "prefix_hit"  # sent to the replica with the longest cached prefix
    LOAD_FALLBACK = "load_fallback"  # some replica held a prefix but was too loaded (or full): by load
    NO_MATCH = "no_match"  # no replica held a prefix: by load (least loaded when slot-aware, else power of two)


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    replica_id: Hashable
    reason: RoutingReason
    matched_blocks: int  # leading prompt blocks the chosen replica holds


def decide_replica(matches: Mapping[Hashable, int], loads: Mapping[Hashable, int], max_load_gap: int,
                   rng: random.Random, slots: int | None = None) -> RoutingDecision:
    """The replica for one request, and why.

    `loads` (replica id -> requests in flight) is the candidate set; `matches` (replica id -> leading blocks
    held, from `PrefixIndex.match`) may name others, which are ignored. Among candidates holding a prefix and
    loaded at most `max_load_gap` over the least loaded candidate: the longest match, then the lower load, then
    `rng`. Otherwise power of two choices on load. Deterministic given `rng`'s state.

    With `slots` (the rows of one replica's engine batch, max_num_seqs), routing is slot-aware: while any
    candidate has a free slot only those are candidates, so a request never waits in one engine's queue while
    another engine has a free row (a cached prefix saves a prefill, a queue costs whole decode steps), and the
    fallback is the least loaded candidate (ties by `rng`), not two drawn at random, which can both be full.
    """
    if not loads:
        raise ValueError("no candidate replicas")
    any_match = any(matches.get(replica_id, 0) > 0 for replica_id in loads)
    if slots is not None:
        loads = {replica_id: load for replica_id, load in loads.items() if load < slots} or loads
    max_allowed_load = min(loads.values()) + max_load_gap
    best_key: tuple[int, int] | None = None
    best_ids: list[Hashable] = []
    for replica_id, load in loads.items():
        num_blocks = matches.get(replica_id, 0)
        if num_blocks <= 0:
            continue
        if load > max_allowed_load:
            continue
        key = (num_blocks, -load)
        if best_key is None or key > best_key:
            best_key, best_ids = key, [replica_id]
        elif key == best_key:
            best_ids.append(replica_id)
    if best_key is not None:
        chosen = best_ids[0] if len(best_ids) == 1 else rng.choice(best_ids)
        return RoutingDecision(chosen, RoutingReason.PREFIX_HIT, best_key[0])
    chosen = power_of_two_choices(loads, rng) if slots is None else least_loaded(loads, rng)
    reason = RoutingReason.LOAD_FALLBACK if any_match else RoutingReason.NO_MATCH
    return RoutingDecision(chosen, reason, matches.get(chosen, 0))


def choose_replica(matches: Mapping[Hashable, int], loads: Mapping[Hashable, int], max_load_gap: int,
                   rng: random.Random) -> Hashable:
    """`decide_replica`'s replica id alone."""
    return decide_replica(matches, loads, max_load_gap, rng).replica_id


def least_loaded(loads: Mapping[Hashable, int], rng: random.Random) -> Hashable:
    """The candidate with the fewest requests in flight; a tie drawn by `rng`."""
    fewest = min(loads.values())
    tied = [replica_id for replica_id, load in loads.items() if load == fewest]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def power_of_two_choices(loads: Mapping[Hashable, int], rng: random.Random) -> Hashable:
    """Two distinct candidates drawn by `rng`; the less loaded one (the first drawn on a tie)."""
    replica_ids = list(loads)
    if len(replica_ids) == 1:
        return replica_ids[0]
    first, second = rng.sample(replica_ids, 2)
    return first if loads[first] <= loads[second] else second


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _messages(messages: Any, out: list[str]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        _flatten(messages, out, "message")
        return
    for message in messages:
        role = _field(message, "role") or _field(message, "type") or "message"
        out.append(f"\n<|{role}|>\n")
        content = _field(message, "content")
        if isinstance(content, str):
            out.append(content)
        else:
            _flatten(content, out)
        # Tool calls, tool call ids, names, function call arguments and outputs are part of the prompt too.
        for key, value in _items(message):
            if key not in ("role", "content", "type") and value is not None:
                _flatten(value, out, key)


def _completion_prompt(prompt: Any, out: list[str]) -> None:
    if isinstance(prompt, str):
        out.append(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        out.append("\n<|prompt|>\n".join(prompt))
    else:
        # Token ids (a list, or a list of lists): their repr shares a prefix exactly when the ids do.
        out.append(repr(prompt))


def _items(obj: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        return obj.items()
    fields = getattr(type(obj), "model_fields", None)  # pydantic models, in declaration order
    if isinstance(fields, Mapping):
        return ((name, getattr(obj, name, None)) for name in fields)
    return ()


def _flatten(value: Any, out: list[str], key: str | None = None, depth: int = 0) -> None:
    """Append the text leaves of `value` (str, numbers, lists, dicts, pydantic models) in order."""
    if value is None or depth > _MAX_DEPTH:
        return
    if key is not None:
        out.append(f"<{key}>")
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, (bytes, bytearray)):
        out.append(bytes(value).decode("utf-8", "replace"))
    elif isinstance(value, (bool, int, float)):
        out.append(str(value))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _flatten(item, out, None, depth + 1)
    else:
        for name, item in _items(value):
            if item is not None:
                _flatten(item, out, name, depth + 1)
