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


def test_one_config_shape_the_top_level_form_is_one_model_normalized_once():
    sugar = AppConfig.model_validate({"engine": {"max_num_seqs": 3}, "model_deployment": {"num_replicas": 2},
                                      "admission": {"max_n": 2}})
    listed = AppConfig.model_validate({"models": [{"engine": {"max_num_seqs": 3},
                                                   "model_deployment": {"num_replicas": 2}}],
                                       "admission": {"max_n": 2}})
    assert sugar == listed and len(sugar.models) == 1
    assert (sugar.engine.max_num_seqs, sugar.model_deployment.num_replicas) == (3, 2)
    assert AppConfig.model_validate({"models": None, "engine": {"max_num_seqs": 3}}) == AppConfig(engine={"max_num_seqs": 3})
    # The dump is the one shape, and validates back to the same config.
    dumped = sugar.model_dump()
    assert set(dumped) & {"model", "engine", "frontend", "model_deployment"} == set()
    assert AppConfig.model_validate(dumped) == sugar


def test_deployment_is_accepted_as_the_old_name_of_model_deployment_but_not_both():
    old = AppConfig.model_validate({"models": [{"deployment": {"num_replicas": 3}}]})
    assert old.models[0].model_deployment.num_replicas == 3
    with pytest.raises(ValidationError):
        AppConfig.model_validate({"models": [{"deployment": {"num_replicas": 3}, "model_deployment": {}}]})


def test_views_are_built_without_validating_again_and_carry_the_resolved_placement(monkeypatch):
    config = AppConfig.model_validate(TWO_MODELS)

    def no_validation(*args, **kwargs):
        raise AssertionError("model_views() validated a config")

    monkeypatch.setattr(AppConfig, "model_validate", no_validation)
    default, tiny = config.model_views()
    assert default.models[0] is config.models[0] and tiny.models[0] is config.models[1]
    assert default.placement == tiny.placement == "separate"
    assert default.tenancy is config.tenancy


def test_a_several_model_config_has_no_single_engine():
    config = AppConfig.model_validate(TWO_MODELS)
    with pytest.raises(ValueError, match="2 models"):
        config.engine  # noqa: B018 - the property raises
