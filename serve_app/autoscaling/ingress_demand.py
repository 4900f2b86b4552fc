"""Load that waits at, or was refused by, the ingress replicas (placement `separate`), as model replicas report it.

With the ingress in a deployment of its own, tenancy's gate queue and the refusals of deadline admission and of a
cold start happen where the model deployment's autoscaling policy cannot see them (it reads only the model
replicas). So each ingress replica sends its share of that load with every request it hands over
(`ServerRequest.ingress_demand`: its waiting and shed requests for the model divided by the model's running
replicas), and each model replica adds the latest share of every ingress replica it heard from in the last
`fresh_s` to the `num_waiting` it reports. Summed over the model replicas, that is about the ingress replicas'
whole demand. Pure: the caller passes the clock.
"""

from __future__ import annotations


class IngressDemand:
    def __init__(self, fresh_s: float = 10.0):
        self.fresh_s = fresh_s
        self._latest: dict[str, tuple[float, float]] = {}  # ingress replica -> (its share, when heard)

    def heard(self, ingress_id: str, share: float, now_s: float) -> None:
        self._latest[ingress_id] = (max(0.0, share), now_s)

    def total(self, now_s: float) -> float:
        """The fresh shares summed (an ingress replica silent for `fresh_s` counts no more)."""
        for ingress_id in [i for i, (_, at_s) in self._latest.items() if now_s - at_s > self.fresh_s]:
            del self._latest[ingress_id]
        return sum(share for share, _ in self._latest.values())
