"""One real Ray Serve app per test session: the default configuration, exactly as a user gets it.

Two apps live for the whole session: the default deployment (SmolLM2, every engine setting at its default,
`dtype: auto` included) and the tiny model behind small admission limits (faults, fuzzing, overload). Other
apps a test module needs (tensor-parallel, compressed checkpoint) run beside them on the same Serve instance
under their own route prefix (`module_app`) and are deleted when that module ends, so that at most one of
them is up at a time: the machine has 24 GB and every app holds its own engine and stage replicas.
"""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.platform.fake_gpu_cluster import free_port
from serve_app.platform.ray_env import apply_ray_environment
from tests.conftest import COLLECTED_AT
from tests.devices import on_device, requested_devices, unavailable_reason

# Ray as `serve-app serve` starts it for the default configuration (its Serve mode is read from the environment
# by every Ray process, so it is set before this session imports or starts Ray).
apply_ray_environment(AppConfig())

MAIN_APP = "serve_app_test"


def pytest_generate_tests(metafunc):
    """Every test whose fixtures start an app runs once per requested device (`--device`, tests/devices.py)."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", requested_devices(metafunc.config), indirect=True, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Tests that start Ray clusters of their own run first, before the session's Ray starts in this process,
    whatever order the files were collected in (and so nothing else is up while they run); then the rest in
    collection order, one device after the other (pytest's own grouping by `device` would move tests that take
    none, such as the browser and unit tests, behind every app). In a run without the CPU, integration tests
    that take no device are skipped: they hold on CPU only."""
    devices = requested_devices(config)

    def device_index(item) -> int:
        device = getattr(item, "callspec", None) and item.callspec.params.get("device")
        return devices.index(device) if device in devices else 0

    items.sort(key=lambda item: (0 if item.get_closest_marker("own_ray_cluster") else 1, device_index(item),
                                 item.stash.get(COLLECTED_AT, 0)))
    if "cpu" not in devices:
        for item in items:
            if item.get_closest_marker("integration") and "device" not in item.fixturenames:
                item.add_marker(pytest.mark.skip(reason="a CPU-only test (it takes no device); run with --device cpu"))


@pytest.fixture(autouse=True, scope="module")
def _no_ray_in_this_process_for_own_clusters(request):
    """Modules marked own_ray_cluster start Ray clusters of their own, with which a session app's Ray in this process
    would clash; pytest_collection_modifyitems orders them first. Module-scoped and autouse: checked before the
    module's own fixtures start anything."""
    if request.node.get_closest_marker("own_ray_cluster"):
        import ray

        if ray.is_initialized():
            pytest.fail("Ray is already initialized in this process: own_ray_cluster tests must run first "
                        "(tests/integration/conftest.py orders them)")


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device this test's apps run on (parametrized by pytest_generate_tests)."""
    reason = unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(f"{request.param}: {reason}")
    return request.param


def make_test_config(**overrides) -> AppConfig:
    """The default configuration (model, engine, deployments as a user gets them), with a shorter timeout."""
    data = {
        "admission": {"max_in_flight_requests": 128, "request_timeout_s": 120},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return AppConfig.model_validate(data)


@pytest.fixture(scope="session")
def serve_instance():
    import ray
    from ray import serve

    port, metrics_port = free_port(), free_port()
    ray.init(address="local", num_cpus=16, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    started: list[str] = []
    yield {"port": port, "apps": started, "metrics_port": metrics_port}
    for name in started:
        serve.delete(name)
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def start_app(device, serve_instance):
    """start_app(config, name, route_prefix) -> base URL (without /v1) of a new app on the shared instance, with
    `config` put on this session's device."""
    from ray import serve

    from serve_app.app import build_graph

    def _start(config: AppConfig, name: str, route_prefix: str) -> str:
        # An app of a name already running is updated in place (Serve's rolling update).
        serve.run(build_graph(on_device(config, device)), name=name, route_prefix=route_prefix)
        if name not in serve_instance["apps"]:
            serve_instance["apps"].append(name)
        base = f"http://127.0.0.1:{serve_instance['port']}{route_prefix.rstrip('/')}"
        _wait_ready(base)
        return base

    return _start


@pytest.fixture(scope="module")
def module_app(start_app, serve_instance):
    """module_app(config, name, route_prefix) -> base URL of an app that is deleted when the module ends."""
    from ray import serve

    names: list[str] = []

    def _start(config: AppConfig, name: str, route_prefix: str) -> str:
        if name not in names:
            names.append(name)
        return start_app(config, name, route_prefix)

    yield _start
    for name in names:
        serve.delete(name)
        serve_instance["apps"].remove(name)


def _wait_ready(base_url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base_url} did not become healthy in {timeout_s} s")


@pytest.fixture(scope="session")
def app_config() -> AppConfig:
    return make_test_config()


@pytest.fixture(scope="session")
def serve_app_url(start_app, app_config) -> str:
    return start_app(app_config, MAIN_APP, "/")


@pytest.fixture(scope="session")
def served_model_name(app_config) -> str:
    return app_config.model.resolved_name()


@pytest.fixture(scope="session")
def model_path(app_config) -> str:
    from serve_app.platform.models import resolve_model_path

    return resolve_model_path(app_config.model)


@pytest.fixture
def openai_client(serve_app_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{serve_app_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def async_openai_client(serve_app_url):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=f"{serve_app_url}/v1", api_key="unused", max_retries=0, timeout=120)


def read_gauge(base_url: str, name: str, model: str | None = None) -> float:
    """A gauge's value from /metrics, summed over its series (only `model`'s when given)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    values = [float(value) for labels, value in re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE)
              if model is None or f'model="{model}"' in labels]
    assert values, f"{name} not in /metrics"
    return sum(values)


def send_unread_stream(base_url: str, body: bytes) -> socket.socket:
    """A streaming request (`body`, to /v1/completions) sent over a raw socket whose answer is never read."""
    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes back up
    sock.sendall(f"POST {url.path}/v1/completions HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: "
                 f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def wait_for_free_slots(base_url: str, timeout_s: float) -> float:
    """Seconds until the ingress holds no admission slot (serve_app_in_flight_requests is 0)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if read_gauge(base_url, "serve_app_in_flight_requests") == 0:
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"admission slots still held after {timeout_s} s: "
                         f"{read_gauge(base_url, 'serve_app_in_flight_requests')}")


@pytest.fixture
def engine_running_requests(serve_app_url):
    """A function returning the engine's running + waiting request count, read from /metrics."""

    def _read() -> int:
        return int(read_gauge(serve_app_url, "serve_app_engine_running_requests")
                   + read_gauge(serve_app_url, "serve_app_engine_waiting_requests"))

    return _read


TINY_APP = "serve_app_tiny_guarded"
TINY_BODY_TIMEOUT_S = 5.0  # tiny_app_url's admission.body_timeout_s


@pytest.fixture(scope="session")
def tiny_app_url(start_app) -> str:
    """The tiny model (fast to restart) behind a small admission limit: for fault, fuzz and overload tests.

    Tests that kill replicas leave it serving again before they end.
    """
    config = make_test_config(model={"source": "tiny"}, engine={"max_num_seqs": 8},
                              admission={"max_in_flight_requests": 8, "request_timeout_s": 60, "max_tokens_limit": 2000,
                                         "body_timeout_s": TINY_BODY_TIMEOUT_S})
    return start_app(config, TINY_APP, "/guarded")


def replica_processes(app: str, deployment: str = "") -> list:
    """psutil processes of an app's Serve replicas (Ray titles them `ray::ServeReplica:<app>:<deployment>`)."""
    import psutil

    title = f"ray::ServeReplica:{app}:{deployment}"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.startswith(title) and (deployment or cmdline[len(title):len(title) + 1] not in ("", " ")):
            found.append(process)
    return found


def kill_replica(app: str, deployment: str) -> None:
    """Kill the one replica actor of a deployment (Serve notices and starts a replacement)."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
