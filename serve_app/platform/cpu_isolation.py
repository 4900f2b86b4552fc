"""Keep the graph's Python processes off the cores the CPU engine computes on.

vLLM's CPU backend binds the engine's OpenMP compute threads to some cores and leaves the rest for
"other processes". Next to `vllm serve` that rest is one API server; next to serve_app it is a Ray
cluster (raylet, GCS, Serve controller, HTTP proxy) and the graph's stage replicas. Left to the OS
scheduler they land on the compute cores too and preempt the engine mid-step, which stretches every
token. `serve-app serve` therefore splits the cores once, before Ray starts:

- the graph's cores: the launching process (and so every Ray process it starts) is pinned to them;
- the engine's cores: written into the config (`engine.engine_cpus`), which every model replica gets; the
  replica widens its own affinity only while it spawns the engine process, and tells vLLM to bind its
  compute threads there (`VLLM_CPU_OMP_THREADS_BIND`).

On two cores that rule costs more than it saves: setting one core apart halves the engine's compute, and
the engine on both cores (the graph sharing them) measured 1.3x output tokens/s at 8 and 32 users and
-50 ms TTFT p50 at 1 user, for a slightly longer inter-token tail (README, Performance). So with exactly two
cores and one worker the engine computes on both and nothing is pinned.

`plan_core_split` is the pure decision; `pin_graph_process` and `engine_spawn_affinity` are the I/O.
Under `serve run` or KubeRay nothing pins Ray: set `engine.engine_cpus` and pin the Ray processes to the
other cores with `taskset` (see README), or leave it off.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class CoreSplit:
    engine: tuple[int, ...]
    graph: tuple[int, ...]  # may be the engine's own cores (shared: two cores)

    @property
    def is_shared(self) -> bool:
        return bool(set(self.engine) & set(self.graph))

    @property
    def omp_threads_bind(self) -> str:
        return ",".join(str(cpu) for cpu in self.engine)


def parse_cpu_list(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5] (the syntax of VLLM_CPU_OMP_THREADS_BIND, ranks split by '|')."""
    cpus: list[int] = []
    for rank in text.split("|"):
        for part in filter(None, (p.strip() for p in rank.split(","))):
            low, _, high = part.partition("-")
            cpus.extend(range(int(low), int(high or low) + 1))
    return sorted(set(cpus))


def plan_core_split(allowed: list[int], num_workers: int, omp_threads_bind: str | None) -> CoreSplit | None:
    """Which cores the engine computes on and which the rest of the graph uses; None: do not split.

    With a user binding, the graph gets whatever the binding leaves. Otherwise, like vLLM's own
    automatic binding for one worker, the last allowed core is left to the other processes and the
    engine computes on the rest; on exactly two cores the engine computes on both and the graph shares
    them (module docstring). Sharded engines without a binding are left to vLLM.
    """
    allowed = sorted(set(allowed))
    if omp_threads_bind == "nobind":  # the engine's threads float over every core: nothing to keep apart
        return None
    if omp_threads_bind == "auto":
        omp_threads_bind = None
    if omp_threads_bind:
        engine = [cpu for cpu in parse_cpu_list(omp_threads_bind) if cpu in allowed]
    elif num_workers == 1 and len(allowed) == 2:
        return CoreSplit(engine=tuple(allowed), graph=tuple(allowed))
    elif num_workers == 1 and len(allowed) > 2:
        engine = allowed[:-1]
    else:
        return None
    graph = [cpu for cpu in allowed if cpu not in engine]
    if not engine or not graph:
        return None
    return CoreSplit(engine=tuple(engine), graph=tuple(graph))


def pin_graph_process(split: CoreSplit) -> None:
    """Pin this process (and every process it starts later, Ray included) to the graph's cores."""
    os.sched_setaffinity(0, split.graph)


@contextlib.contextmanager
def engine_spawn_affinity(engine_cpus: list[int] | None) -> Iterator[None]:
    """While the engine process is spawned: allow its cores here (it inherits them), then narrow back."""
    if not engine_cpus:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, previous | set(engine_cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)
