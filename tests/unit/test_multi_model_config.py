"""Several models behind one endpoint: the `models:` config, its per-model views and the graph built from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.app import MODEL_SERVER, build_graph, model_deployment_name, model_options
from serve_app.config import AppConfig, config_from_args, load_config

REPO = Path(__file__).resolve().parents[2]

TWO_MODELS = {
    "models": [
        {"model": {"source": "default", "adapters": [{"name": "support-bot", "path": "/adapters/support"}]},
         "engine": {"max_num_seqs": 16}, "deployment": {"num_replicas": "auto", "max_replicas": 3, "latency_targets": {"ttft_p99_ms": 800}}},
        {"model": {"source": "tiny"}, "engine": {"max_num_seqs": 4}, "deployment": {"num_replicas": 2}},
    ],
    "admission": {"request_timeout_s": 120},
}


def test_one_model_config_is_its_own_view_with_the_model_in_the_replica():
    config = AppConfig()
    assert config.model_views() == [config]
    assert config.placement == "with_model"
    assert config.served_names() == {"SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct"}


def test_each_model_keeps_its_own_engine_deployment_and_targets_and_shares_the_rest():
    config = AppConfig.model_validate(TWO_MODELS)
    default, tiny = config.model_views()
    assert config.placement == "separate"
    assert (default.model.resolved_name(), tiny.model.resolved_name()) == ("SmolLM2-135M-Instruct", "tiny-llama")
    assert (default.engine.max_num_seqs, tiny.engine.max_num_seqs) == (16, 4)
    assert default.model_deployment.latency_targets.ttft_p99_ms == 800
    assert tiny.model_deployment.latency_targets.ttft_p99_ms == AppConfig().model_deployment.latency_targets.ttft_p99_ms
    assert (default.model_deployment.max_replicas, tiny.model_deployment.num_replicas) == (3, 2)
    assert default.admission.request_timeout_s == tiny.admission.request_timeout_s == 120
    assert config.served_names() == {"SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
                                     "support-bot": "SmolLM2-135M-Instruct", "tiny-llama": "tiny-llama"}


@pytest.mark.parametrize("bad, message", [
    ({"models": []}, "at least one model"),
    ({"models": [{}], "engine": {"max_num_seqs": 4}}, "either `models:` or the top-level engine"),
    ({"models": [{"model": {"source": "tiny"}}, {"model": {"source": "/x/tiny-llama"}}]}, "repeated: ['tiny-llama']"),
    ({"models": [{"model": {"source": "tiny", "adapters": [{"name": "tiny-llama", "path": "/a"}]}}]}, "repeated"),
    ({"models": [{}, {"model": {"source": "tiny"}}], "ingress_placement": "with_model"}, "with_model serves one model"),
])
def test_contradictory_model_lists_are_refused_naming_the_problem(bad, message):
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(bad)
    assert message in str(info.value)


def test_a_models_file_loads_through_serve_config_args_with_overrides():
    path = REPO / "cluster" / "two-models.yaml"
    loaded = load_config(path)
    assert [v.model.resolved_name() for v in loaded.model_views()] == ["SmolLM2-135M-Instruct", "tiny-llama"]
    merged = config_from_args({"config_path": str(path), "admission": {"request_timeout_s": 42}})
    assert merged.admission.request_timeout_s == 42
    assert len(merged.model_views()) == 2


def test_graph_has_one_model_deployment_per_model_with_its_own_options():
    config = AppConfig.model_validate(TWO_MODELS)
    default, tiny = config.model_views()
    assert model_deployment_name(config, default) == f"{MODEL_SERVER}-SmolLM2-135M-Instruct"
    assert model_deployment_name(AppConfig(), AppConfig()) == MODEL_SERVER
    # Each model autoscales on its own replicas' latency against its own targets.
    policy = model_options(default)["autoscaling_config"]
    assert policy["max_replicas"] == 3 and policy["policy"]["policy_kwargs"]["ttft_p99_target_ms"] == 800
    assert model_options(tiny)["num_replicas"] == 2
    # Streams may run to the request timeout; a replica being replaced lets them finish.
    assert model_options(tiny)["graceful_shutdown_timeout_s"] >= config.admission.request_timeout_s
    app = build_graph(config)
    ingress = app._bound_deployment
    models = ingress.init_args[1]
    assert sorted(models) == ["SmolLM2-135M-Instruct", "tiny-llama"]
    assert {m._bound_deployment.name for m in models.values()} == {f"{MODEL_SERVER}-SmolLM2-135M-Instruct",
                                                            f"{MODEL_SERVER}-tiny-llama"}
