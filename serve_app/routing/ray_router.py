"""`PrefixAffinityRouter`: the Ray Serve request router of a model's deployment (serve_app/routing/).

It runs inside every caller's deployment handle (the ingress replicas), keeps its own `PrefixIndex` (one per
router, nothing shared: no extra actor or RPC per request) and reads load from what the base router already keeps.
The graph builder attaches it with `request_router_options(config.prefix_routing)`, merged into the model
deployment's `.options(...)`.

Load of a replica: the base router's queue-length cache (the replica's own count of ongoing requests from its
last rejection-protocol reply or probe, plus this router's sends since, minus its finished requests); where that
entry is missing or stale (no traffic for RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S), this router's own count of
requests in flight to it.

A prompt is recorded for the replica that accepted it (`on_request_routed`), so the index holds what was really
sent. FIFOMixin is left out on purpose: it hands a replica chosen for one request's prefix to whichever request
is oldest; the base class fulfils exactly the request the replica was chosen for.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)
from ray.util import metrics

from serve_app.config import PrefixRoutingConfig
from serve_app.routing.prefix_affinity import (
    PrefixIndex,
    RoutingDecision,
    RoutingReason,
    decide_replica,
    prefix_hashes,
    prompt_text,
)


# A choice not yet seen sent counts on its replica for at most this long (a request rejected or cancelled before
# its send is never seen sent).
UNSENT_CHOICE_TTL_S = 1.0


class PrefixAffinityRouter(LocalityMixin, MultiplexMixin, RequestRouter):
    """Longest cached prefix within a load bound, else the least loaded (slot-aware) or power of two choices;
    adapters first, as Ray's own router."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.initialize_state()

    def initialize_state(self, block_chars: int = 256, max_load_gap: int = 4, max_tracked_blocks: int = 200_000,
                         seed: int | None = None, slots: int | None = None) -> None:
        """Called by Serve with `RequestRouterConfig.request_router_kwargs` (PrefixRoutingConfig's fields, and
        `slots`: the rows of one replica's engine batch, which makes the choice slot-aware; see decide_replica)."""
        self.block_chars = block_chars
        self.max_load_gap = max_load_gap
        self.slots = slots
        self.index = PrefixIndex(max_tracked_blocks)
        self._rng = random.Random(seed)
        self._num_in_flight: dict[ReplicaID, int] = {}
        # Choices made but not yet sent (internal request id -> replica, when): Ray's routing task fulfils a burst's
        # requests back to back, before any send updates the load cache, so without them a burst herds onto the
        # one replica that looked least loaded.
        self._unsent: dict[str, tuple[ReplicaID, float]] = {}
        self.decision_counts: dict[RoutingReason, int] = {reason: 0 for reason in RoutingReason}
        # A Ray metric (the base router exports its own the same way): Prometheus shows it with the `ray_` prefix.
        self._decisions_metric = metrics.Counter(
            "serve_app_prefix_routing_decisions",
            description="Requests routed by PrefixAffinityRouter, by decision (prefix_hit, load_fallback, no_match).",
            tag_keys=("application", "deployment", "decision"),
        ).set_default_tags({"application": self._deployment_id.app_name, "deployment": self._deployment_id.name})

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """Rank 0: the chosen replica. Rank 1: the other candidates, tried (least loaded first) if it is full."""
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            candidate_ids = self.apply_multiplex_routing(pending_request=pending_request)
        else:
            candidate_ids = self.apply_locality_routing(pending_request=pending_request)
        replicas = [self._replicas[i] for i in candidate_ids if i in self._replicas]
        if not replicas:
            return []
        decision = self.decide(replicas, self.request_hashes(pending_request))
        if pending_request is not None:
            self._unsent[pending_request.metadata.internal_request_id] = (decision.replica_id, time.monotonic())
        chosen = self._replicas[decision.replica_id]
        others = [r for r in replicas if r.replica_id != decision.replica_id]
        return [[chosen], others] if others else [[chosen]]

    def decide(self, replicas: list[RunningReplica], hashes: list[int]) -> RoutingDecision:
        """The pure decision over these candidates (full replicas left out unless all are full), counted."""
        unsent = self._unsent_choices()
        loads = {r.replica_id: self.replica_load(r) + unsent[r.replica_id] for r in replicas}
        available = {r.replica_id: loads[r.replica_id] for r in replicas
                     if loads[r.replica_id] < r.max_ongoing_requests}
        matches = self.index.match(hashes) if hashes else {}
        decision = decide_replica(matches, available or loads, self.max_load_gap, self._rng, self.slots)
        self.decision_counts[decision.reason] += 1
        self._decisions_metric.inc(tags={"decision": decision.reason.value})
        return decision

    def replica_load(self, replica: RunningReplica) -> int:
        """Requests in flight on `replica`, as this router knows it without an RPC."""
        cached = self._replica_queue_len_cache.get(replica.replica_id)
        return cached if cached is not None else self._num_in_flight.get(replica.replica_id, 0)

    def _unsent_choices(self) -> Counter:
        """Choices not yet sent, per replica (stale ones forgotten)."""
        oldest_s = time.monotonic() - UNSENT_CHOICE_TTL_S
        for request_id in [i for i, (_, at_s) in self._unsent.items() if at_s < oldest_s]:
            del self._unsent[request_id]
        return Counter(replica_id for replica_id, _ in self._unsent.values())

    def request_hashes(self, pending_request: PendingRequest | None) -> list[int]:
        """Block hashes of the request's prompt, salted with its adapter; [] when the request carries no body."""
        if pending_request is None or not pending_request.args:
            return []
        body = getattr(pending_request.args[0], "body", None)  # serve_app.server.model_server.ServerRequest
        if body is None:
            return []
        salt = pending_request.metadata.multiplexed_model_id or ""
        return prefix_hashes(prompt_text(body), self.block_chars, salt=salt)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        super().on_request_routed(pending_request, replica_id, result)
        self._unsent.pop(pending_request.metadata.internal_request_id, None)
        hashes = self.request_hashes(pending_request)
        if hashes and replica_id in self._replicas:
            self.index.record(hashes, replica_id)

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)
        # The send now counts in the load cache: the oldest choice of this replica is no longer unsent.
        sent = next((i for i, (chosen, _) in self._unsent.items() if chosen == replica_id), None)
        if sent is not None:
            del self._unsent[sent]
        self._num_in_flight[replica_id] = self._num_in_flight.get(replica_id, 0) + 1

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        super().on_request_completed(replica_id, internal_request_id)
        remaining = self._num_in_flight.get(replica_id, 0) - 1
        if remaining > 0:
            self._num_in_flight[replica_id] = remaining
        else:
            self._num_in_flight.pop(replica_id, None)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        previous_ids = set(self._replica_id_set)
        super().update_replicas(replicas)
        self._forget(previous_ids - self._replica_id_set)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._forget({replica_id})

    def _forget(self, replica_ids: set[ReplicaID]) -> None:
        if replica_ids:
            self.index.forget_replicas(replica_ids)
            for replica_id in replica_ids:
                self._num_in_flight.pop(replica_id, None)


def request_router_options(prefix_routing: PrefixRoutingConfig, slots: int | None = None) -> dict[str, Any]:
    """The model deployment's `.options(...)` entry for prefix routing: {} when it is off. `slots`: the rows of
    one replica's engine batch (max_num_seqs, with tenancy's reserve), for slot-aware routing."""
    if not prefix_routing.enabled:
        return {}
    from ray.serve.config import RequestRouterConfig

    return {"request_router_config": RequestRouterConfig(
        request_router_class=PrefixAffinityRouter,
        request_router_kwargs={"block_chars": prefix_routing.block_chars, "max_load_gap": prefix_routing.max_load_gap,
                               "max_tracked_blocks": prefix_routing.max_tracked_blocks, "slots": slots},
    )}
