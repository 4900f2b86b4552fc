"""The core split between the CPU engine and the rest of the graph (pure decision)."""

import pytest

from serve_app.platform.cpu_isolation import CoreSplit, parse_cpu_list, plan_core_split


def test_parse_cpu_list_accepts_vllm_bind_syntax():
    assert parse_cpu_list("0-2,5") == [0, 1, 2, 5]
    assert parse_cpu_list("0|1") == [0, 1]
    assert parse_cpu_list("3") == [3]


def test_one_worker_leaves_the_last_core_to_the_graph_like_vllm_autobind():
    split = plan_core_split([0, 1, 2, 3], 1, None)
    assert split.engine == (0, 1, 2) and split.graph == (3,) and split.omp_threads_bind == "0,1,2"


def test_on_two_cores_the_engine_computes_on_both_and_the_graph_shares_them():
    split = plan_core_split([0, 1], 1, None)
    assert split == CoreSplit(engine=(0, 1), graph=(0, 1)) and split.is_shared and split.omp_threads_bind == "0,1"
    assert not plan_core_split([0, 1, 2], 1, None).is_shared


def test_user_binding_decides_and_the_graph_gets_the_rest():
    assert plan_core_split([0, 1, 2, 3], 2, "0|1") == CoreSplit(engine=(0, 1), graph=(2, 3))


@pytest.mark.parametrize("allowed,workers,bind", [
    ([0], 1, None),            # one core: nothing to split
    ([0, 1], 2, None),         # sharded without a binding: left to vLLM
    ([0, 1], 2, "0|1"),        # the binding takes every core
    ([0, 1], 1, "7"),          # the binding names no allowed core
    ([0, 1], 1, "nobind"),     # vLLM's own "do not bind"
])
def test_no_split_when_there_is_nothing_sensible_to_split(allowed, workers, bind):
    assert plan_core_split(allowed, workers, bind) is None


def test_vllm_auto_binding_is_the_default_split():
    assert plan_core_split([0, 1], 1, "auto") == plan_core_split([0, 1], 1, None)


def test_engine_cores_reach_every_model_replica_through_the_config(monkeypatch):
    """serve-app serve's split is written into the config each model server gets (no environment variable), so
    the engine binds its threads there the same under serve-app serve, serve run or KubeRay."""
    from serve_app import cli
    from serve_app.config import AppConfig
    from serve_app.server.engine_args import engine_environment

    pinned = []
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    monkeypatch.setattr("serve_app.platform.cpu_isolation.os.sched_setaffinity", lambda _pid, cpus: pinned.append(cpus))
    config = AppConfig.model_validate({"models": [{"model": {"source": "tiny"}}, {"model": {"source": "default"}}]})
    cli._isolate_engine_cpus(config)
    assert pinned == [(3,)]
    for view in config.model_views():
        assert view.engine.engine_cpus == [0, 1, 2]
        environment = engine_environment(view.engine)
        # One compute thread per engine core: Ray's OMP_NUM_THREADS (the replica's num_cpus) is not inherited.
        assert environment["VLLM_CPU_OMP_THREADS_BIND"] == "0,1,2" and environment["OMP_NUM_THREADS"] == "3"
    # An explicit binding wins over the split.
    explicit = AppConfig.model_validate({"engine": {"engine_cpus": [0, 1], "cpu_omp_threads_bind": "0|1"}})
    assert engine_environment(explicit.engine)["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert engine_environment(explicit.engine)["OMP_NUM_THREADS"] == "1"  # per tensor-parallel rank


def test_a_lone_cpu_worker_runs_in_the_engine_core_process_unless_the_config_says_otherwise():
    """vLLM's CPU platform gives a single worker a process of its own unless V1 multiprocessing is off; the
    engine then hands every step to it across processes (1.5x slower here: docs/performance.md)."""
    from serve_app.config import AppConfig
    from serve_app.server.engine_args import engine_environment

    assert engine_environment(AppConfig().engine)["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    for engine in ({"cpu_worker_in_engine_core": False}, {"tensor_parallel_size": 2},
                   {"distributed_executor_backend": "ray"}):
        config = AppConfig.model_validate({"engine": engine})
        assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in engine_environment(config.engine)
