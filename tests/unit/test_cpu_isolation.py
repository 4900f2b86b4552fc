"""The core split between the CPU engine and the rest of the graph (pure decision)."""

import pytest

from serve_app.platform.cpu_isolation import CoreSplit, parse_cpu_list, plan_core_split


def test_parse_cpu_list_accepts_vllm_bind_syntax():
    assert parse_cpu_list("0-2,5") == [0, 1, 2, 5]
    assert parse_cpu_list("0|1") == [0, 1]
    assert parse_cpu_list("3") == [3]


def test_one_worker_leaves_the_last_core_to_the_graph_like_vllm_autobind():
    assert plan_core_split([0, 1], 1, None) == CoreSplit(engine=(0,), graph=(1,))
    split = plan_core_split([0, 1, 2, 3], 1, None)
    assert split.engine == (0, 1, 2) and split.graph == (3,) and split.omp_threads_bind == "0,1,2"


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
