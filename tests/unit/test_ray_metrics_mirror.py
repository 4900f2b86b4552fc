"""The ingress's Prometheus counters, histograms and gauges reach Ray's metrics as deltas, with their labels."""

from __future__ import annotations

from serve_app.ingress.metrics import IngressMetrics
from serve_app.ingress.ray_metrics_mirror import RegistryMirror, ray_name


class FakeMetric:
    def __init__(self, name, description, tag_keys):
        self.name, self.tag_keys = name, tag_keys
        self.calls: list[tuple[float, dict]] = []

    def inc(self, value, tags=None):
        assert set(tags) == set(self.tag_keys)
        self.calls.append((value, tags))

    def set(self, value, tags=None):
        self.calls.append((value, tags))


def _mirror():
    metrics = IngressMetrics()
    made: dict[str, FakeMetric] = {}

    def factory(name, description, tag_keys):
        made[name] = FakeMetric(name, description, tag_keys)
        return made[name]

    return metrics, RegistryMirror(metrics.registry, factory, factory), made


def test_names():
    assert ray_name("serve_app_requests_total") == "serve_app_ingress_requests"
    assert ray_name("serve_app_ttft_seconds_bucket") == "serve_app_ingress_ttft_seconds_bucket"


def test_counters_and_histograms_are_mirrored_as_deltas_with_their_labels():
    metrics, mirror, made = _mirror()
    metrics.requests.labels(model="m", route="/v1/completions", status="200").inc(3)
    metrics.ttft.labels(model="m").observe(0.3)
    mirror.mirror()
    requests = made["serve_app_ingress_requests"]
    assert requests.calls == [(3.0, {"model": "m", "route": "/v1/completions", "status": "200"})]
    buckets = {tags["le"]: value for value, tags in made["serve_app_ingress_ttft_seconds_bucket"].calls}
    assert "0.2" not in buckets and buckets["0.5"] == 1.0 and buckets["+Inf"] == 1.0
    assert made["serve_app_ingress_ttft_seconds_count"].calls == [(1.0, {"model": "m"})]
    mirror.mirror()  # nothing new: nothing added
    assert len(requests.calls) == 1
    metrics.requests.labels(model="m", route="/v1/completions", status="200").inc(2)
    mirror.mirror()
    assert requests.calls[-1] == (2.0, {"model": "m", "route": "/v1/completions", "status": "200"})


def test_gauges_are_set_and_engine_gauges_left_to_the_model_replicas():
    metrics, mirror, made = _mirror()
    metrics.in_flight.set(4)
    metrics.engine_running.labels(model="m").set(7)
    mirror.mirror()
    assert made["serve_app_ingress_in_flight_requests"].calls == [(4.0, {})]
    assert not any("engine" in name for name in made)
