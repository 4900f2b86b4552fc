"""The Ray environment each config asks for (set by `serve-app serve` and the test suite before Ray starts)."""

from serve_app.config import AppConfig
from serve_app.platform.ray_env import ray_environment


def test_throughput_optimized_and_a_slower_control_loop_by_default_haproxy_and_worker_niceness_on_request():
    assert ray_environment(AppConfig()) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                                            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
    assert ray_environment(AppConfig(ray_worker_niceness=0))["RAY_worker_niceness"] == "0"
    assert ray_environment(AppConfig(ray_serve_haproxy=True))["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    standard = ray_environment(AppConfig(ray_serve_throughput_optimized=False, ray_serve_control_loop_interval_s=0.1))
    assert standard == {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"}
