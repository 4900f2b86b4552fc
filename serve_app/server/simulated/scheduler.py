"""The simulated engine's scheduler: continuous batching over a KV cache counted in blocks (pure, no asyncio).

Modelled on vLLM v1's scheduler (and nano-vllm's): every sequence has `num_tokens` (prompt + outputs so far)
and `num_computed_tokens` (those whose KV is cached). A step gives each scheduled sequence a chunk of its
uncomputed tokens within the step's token budget (`max_num_batched_tokens`: chunked prefill); a sequence whose
chunk reaches `num_tokens` samples one new token. Running sequences go first (in admission order), then waiting
ones while `max_num_seqs` and the KV blocks allow. When a running sequence needs a block and none is free, the
most recently admitted running sequence is preempted (recompute: its blocks are freed, it goes back to the front
of the queue and later prefills its prompt and outputs again). With prefix caching, full prompt blocks are
hashed (a chained hash: block i names the whole prefix up to it); a new sequence skips the prefill of its
longest cached prefix, and blocks of finished sequences stay cached until their space is needed (LRU).

The caller owns the clock: `schedule(now_s)` plans a step, `StepCost.step_ms` prices it, and
`postprocess(plan, end_s)` applies it once that time has passed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum


class SeqStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(slots=True, eq=False)
class Sequence:
    """One request's state between the scheduler's steps."""

    seq_id: str
    num_prompt_tokens: int
    max_output_tokens: int
    block_hashes: tuple[int, ...] = ()  # chained hash of each full prompt block (prefix caching)
    arrival_s: float = 0.0
    status: SeqStatus = SeqStatus.WAITING
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prefix-cache hit at the first admission
    num_preemptions: int = 0
    held_hashes: list[int] = field(default_factory=list)  # hashed blocks it references, in prompt order
    num_private_blocks: int = 0
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_blocks(self) -> int:
        return len(self.held_hashes) + self.num_private_blocks

    @property
    def is_finished(self) -> bool:
        return self.status in (SeqStatus.FINISHED, SeqStatus.ABORTED)


class BlockManager:
    """KV blocks as plain counts: private blocks, hashed blocks in use (ref-counted), cached free ones (LRU)."""

    def __init__(self, num_blocks: int, block_size_tokens: int, enable_prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size_tokens = block_size_tokens
        self.enable_prefix_caching = enable_prefix_caching
        self.refs: dict[int, int] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()
        self.num_private = 0

    @property
    def num_free_blocks(self) -> int:
        return self.num_blocks - self.num_private - len(self.refs) - len(self.evictable)

    @property
    def num_available_blocks(self) -> int:
        """Free blocks plus cached ones that may be evicted."""
        return self.num_free_blocks + len(self.evictable)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size_tokens)

    def num_cached_blocks(self, block_hashes: tuple[int, ...], max_blocks: int) -> int:
        """Length of the longest cached prefix, in blocks (at most `max_blocks`)."""
        num = 0
        for block_hash in block_hashes[:max_blocks]:
            if block_hash not in self.refs and block_hash not in self.evictable:
                break
            num += 1
        return num

    def acquire(self, seq: Sequence, block_hash: int) -> None:
        if block_hash in self.evictable:
            del self.evictable[block_hash]
        self.refs[block_hash] = self.refs.get(block_hash, 0) + 1
        seq.held_hashes.append(block_hash)

    def grow(self, seq: Sequence, num_new_blocks: int) -> None:
        """Give `seq` private blocks, evicting least recently cached blocks as needed (caller checked room)."""
        while self.num_free_blocks < num_new_blocks:
            self.evictable.popitem(last=False)
        self.num_private += num_new_blocks
        seq.num_private_blocks += num_new_blocks

    def promote(self, seq: Sequence) -> None:
        """Name `seq`'s newly computed full prompt blocks by their hashes, so later prompts hit them."""
        num_full = min(seq.num_computed_tokens, seq.num_prompt_tokens) // self.block_size_tokens
        while len(seq.held_hashes) < min(num_full, len(seq.block_hashes)) and seq.num_private_blocks > 0:
            seq.num_private_blocks -= 1
            self.num_private -= 1
            self.acquire(seq, seq.block_hashes[len(seq.held_hashes)])

    def release(self, seq: Sequence) -> None:
        for block_hash in seq.held_hashes:
            self.refs[block_hash] -= 1
            if self.refs[block_hash] == 0:
                del self.refs[block_hash]
                if self.enable_prefix_caching:
                    self.evictable[block_hash] = None
        seq.held_hashes.clear()
        self.num_private -= seq.num_private_blocks
        seq.num_private_blocks = 0


@dataclass(slots=True)
class StepPlan:
    """One step: (sequence, tokens computed for it) in order, and what the step costs."""

    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    num_decode_seqs: int = 0
    num_prefill_tokens: int = 0
    num_context_tokens: int = 0  # KV the step's attention reads (each scheduled sequence's context after it)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass(slots=True)
class TokenEvent:
    """A sequence sampled one token at the end of a step."""

    seq: Sequence
    is_first: bool
    is_last: bool


class Scheduler:
    def __init__(self, max_num_seqs: int, max_num_batched_tokens: int, num_kv_blocks: int, block_size_tokens: int,
                 max_model_len: int, enable_prefix_caching: bool = True):
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.blocks = BlockManager(num_kv_blocks, block_size_tokens, enable_prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_prefix_query_tokens = 0
        self.num_prefix_hit_tokens = 0
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def can_fit(self, num_prompt_tokens: int, max_output_tokens: int) -> bool:
        """Whether a request could ever run: within max_model_len and, alone, within the KV cache."""
        num_tokens = num_prompt_tokens + max_output_tokens
        return num_tokens <= self.max_model_len and self.blocks.blocks_for(num_tokens) <= self.blocks.num_blocks

    def add(self, seq: Sequence) -> None:
        if not self.can_fit(seq.num_prompt_tokens, seq.max_output_tokens):
            raise ValueError(f"sequence {seq.seq_id} ({seq.num_prompt_tokens} + {seq.max_output_tokens} tokens) "
                             "can never fit")
        if not self.blocks.enable_prefix_caching:
            seq.block_hashes = ()
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        if seq.is_finished:
            return
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self.blocks.release(seq)
        elif seq in self.waiting:  # (a sequence never added is just marked)
            self.waiting.remove(seq)
        seq.status = SeqStatus.ABORTED

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.release(seq)
        seq.status = SeqStatus.WAITING
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self, now_s: float) -> StepPlan:
        plan = StepPlan()
        budget = self.max_num_batched_tokens
        blocks = self.blocks
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            chunk = min(seq.num_tokens - seq.num_computed_tokens, budget)
            num_new_blocks = blocks.blocks_for(seq.num_computed_tokens + chunk) - seq.num_blocks
            while num_new_blocks > blocks.num_available_blocks and seq.status is SeqStatus.RUNNING:
                victim = self.running[-1]
                self._preempt(victim)
                plan.preempted.append(victim)
            if seq.status is not SeqStatus.RUNNING:
                break  # it preempted itself: nothing after it runs either
            blocks.grow(seq, max(0, num_new_blocks))
            self._plan(plan, seq, chunk)
            budget -= chunk
            index += 1
        while not plan.preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            is_fresh = seq.num_computed_tokens == 0 and seq.first_scheduled_s is None
            # At least one prompt token is computed, so the step samples the next token from it.
            num_hit_blocks = blocks.num_cached_blocks(seq.block_hashes, (seq.num_tokens - 1) // blocks.block_size_tokens)
            for block_hash in seq.block_hashes[:num_hit_blocks]:
                blocks.acquire(seq, block_hash)
            num_computed = num_hit_blocks * blocks.block_size_tokens
            chunk = min(seq.num_tokens - num_computed, budget)
            num_new_blocks = blocks.blocks_for(num_computed + chunk) - seq.num_blocks
            if num_new_blocks > blocks.num_available_blocks:
                blocks.release(seq)
                break
            blocks.grow(seq, num_new_blocks)
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            seq.num_computed_tokens = num_computed
            if is_fresh:
                seq.first_scheduled_s = now_s
                seq.num_cached_prompt_tokens = num_computed
                self.num_prefix_query_tokens += seq.num_prompt_tokens
                self.num_prefix_hit_tokens += num_computed
            self.running.append(seq)
            self._plan(plan, seq, chunk)
            budget -= chunk
        return plan

    @staticmethod
    def _plan(plan: StepPlan, seq: Sequence, chunk: int) -> None:
        plan.scheduled.append((seq, chunk))
        if chunk == 1 and seq.num_computed_tokens >= seq.num_prompt_tokens:
            plan.num_decode_seqs += 1
        else:
            plan.num_prefill_tokens += chunk
        plan.num_context_tokens += seq.num_computed_tokens + chunk

    def postprocess(self, plan: StepPlan, end_s: float) -> list[TokenEvent]:
        """Apply a finished step at `end_s`: computed tokens, one sampled token where a chunk completed."""
        events = []
        for seq, chunk in plan.scheduled:
            if seq.status is not SeqStatus.RUNNING:
                continue  # aborted (or preempted) while the step ran
            seq.num_computed_tokens += chunk
            self.blocks.promote(seq)
            if seq.num_computed_tokens < seq.num_tokens:
                continue  # a prefill chunk: more of the prompt next step
            seq.num_output_tokens += 1
            is_first = seq.first_token_s is None
            if is_first:
                seq.first_token_s = end_s
            seq.last_token_s = end_s
            is_last = seq.num_output_tokens >= seq.max_output_tokens or seq.num_tokens >= self.max_model_len
            if is_last:
                self.running.remove(seq)
                self.blocks.release(seq)
                seq.status = SeqStatus.FINISHED
            events.append(TokenEvent(seq, is_first, is_last))
        return events
