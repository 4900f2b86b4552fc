"""Builder: a validated config in, a bound Ray Serve application out.

    placement with_model (one model):  HTTP proxy -> Ingress + ModelServer (vLLM engine + vLLM's OpenAI frontend)
    placement separate (several):      HTTP proxy -> Ingress (routes by `model`) -> ModelServer-<name>, one
                                       deployment per model, each with its own replicas, scaling and router

`build_app` is the `import_path` target of Serve config files (`serve run cluster/serve-config.yaml`).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from serve_app.autoscaling.hook import model_autoscaling_config, request_based_autoscaling_config
from serve_app.config import AppConfig, DeploymentScaling, config_from_args
from serve_app.ingress.replica import IngressDeployment
from serve_app.routing.ray_router import request_router_options
from serve_app.server.engine_args import engine_environment
from serve_app.server.deployment import ModelServerDeployment


def _actor_resources(scaling: DeploymentScaling) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": scaling.num_cpus}
    if scaling.num_gpus:
        options["num_gpus"] = scaling.num_gpus
    if scaling.resources:
        options["resources"] = dict(scaling.resources)
    return options


def _replica_count(scaling: DeploymentScaling, autoscaling_config: dict[str, Any]) -> dict[str, Any]:
    if scaling.num_replicas == "auto":
        return {"autoscaling_config": autoscaling_config}
    return {"num_replicas": scaling.num_replicas}


def ingress_options(scaling: DeploymentScaling) -> dict[str, Any]:
    """Deployment options of the ingress's own CPU deployment (placement `separate`)."""
    return {
        "ray_actor_options": _actor_resources(scaling),
        "max_ongoing_requests": scaling.max_ongoing_requests,
        **_replica_count(scaling, request_based_autoscaling_config(scaling)),
    }


def model_options(config: AppConfig) -> dict[str, Any]:
    """Model server options: one placement-group bundle per tensor/pipeline-parallel worker."""
    scaling = config.model_deployment
    actor = _actor_resources(scaling)
    actor["runtime_env"] = {"env_vars": engine_environment(config.engine)}
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": scaling.max_ongoing_requests,
        # Engine start-up (weights, KV cache, optional compile) is slow on CPU.
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
        # A replica being replaced (upgrade, downscale) lets its streams finish: they may run to the request timeout.
        "graceful_shutdown_timeout_s": config.admission.request_timeout_s + 5,
        # A full replica runs batch_rows for the load at large: tenancy's reserve is kept for a quiet tenant.
        **_replica_count(scaling, model_autoscaling_config(scaling, slots_per_replica=config.batch_rows)),
    }
    num_workers = config.engine.num_workers
    if num_workers > 1:
        worker_bundle = {k: v for k, v in {"CPU": scaling.num_cpus or 1, "GPU": scaling.num_gpus}.items() if v}
        worker_bundle.update(scaling.resources)
        replica_bundle = {"CPU": scaling.num_cpus, **({"GPU": scaling.num_gpus} if scaling.num_gpus else {}), **scaling.resources}
        options["placement_group_bundles"] = [replica_bundle] + [worker_bundle] * (num_workers - 1)
        options["placement_group_strategy"] = "PACK" if config.engine.distributed_executor_backend == "ray" else "STRICT_PACK"
        # Resources move from the actor options into bundle 0.
        actor.pop("num_cpus", None)
        actor.pop("num_gpus", None)
        actor.pop("resources", None)
    return options


MODEL_SERVER = "ModelServer"


def model_deployment_name(config: AppConfig, view: AppConfig) -> str:
    """`ModelServer` for a one-model config; `ModelServer-<served name>` for each model of several."""
    if len(config.model_views()) == 1:
        return MODEL_SERVER
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in view.model.resolved_name())
    return f"{MODEL_SERVER}-{safe}"


def build_graph(config: AppConfig) -> Application:
    views = config.model_views()
    if config.placement == "with_model":
        # The ingress replica is the model server: it takes the model deployment's resources and scaling.
        return IngressDeployment.options(name=MODEL_SERVER, **model_options(views[0])).bind(views[0])
    models = {
        view.model.resolved_name(): serve.deployment(ModelServerDeployment, name=model_deployment_name(config, view))
        .options(**model_options(view), **request_router_options(view.model_deployment.prefix_routing,
                                                                 slots=view.engine_rows)).bind(view)
        for view in views
    }
    return IngressDeployment.options(**ingress_options(config.ingress_deployment)).bind(config, models)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve-config entry point: `args` is an AppConfig as a dict, or `{"config_path": "file.yaml", ...overrides}`."""
    return build_graph(config_from_args(args or {}))
