"""PNG plots (matplotlib, Agg backend; imported only when plots are asked for)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.metrics import request_metrics  # noqa: E402
from loadtest.records import RequestRecord  # noqa: E402
from serve_app.stats import percentile_key  # noqa: E402

_CDF_PANELS = (("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)"), ("itl", "inter-token gap (ms)"), ("e2e", "end-to-end (ms)"))


def _values(records: list[RequestRecord], name: str) -> list[float]:
    values: list[float] = []
    for record in records:
        value = request_metrics(record).get(name)
        if isinstance(value, list):
            values.extend(value)
        elif value is not None:
            values.append(value)
    return sorted(values)


def plot_latency_cdfs(runs: list[tuple[str, list[RequestRecord], bool]], path: Path) -> Path:
    """Empirical CDFs of TTFT, TPOT, ITL and e2e; dashed: measured from scheduled arrival."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    for axis, (name, title) in zip(axes.flat, _CDF_PANELS):
        for label, records, open_loop in runs:
            values = _values(records, name)
            if values:
                n = len(values)
                line = axis.step(values, [(i + 1) / n for i in range(n)], where="post", label=label)
                if open_loop and name in ("ttft", "e2e"):
                    arrival = _values(records, f"{name}_from_arrival")
                    axis.step(arrival, [(i + 1) / len(arrival) for i in range(len(arrival))], where="post",
                              linestyle="--", color=line[0].get_color(), label=f"{label}, from arrival")
        axis.set_xlabel(title)
        axis.set_ylabel("fraction of samples")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _errorbar(axis, xs, dists, key, label):
    points = [(x, d[key]) for x, d in zip(xs, dists) if d.get("n") and key in d]
    if not points:
        return
    values = [e["value"] for _, e in points]
    # An interpolated extreme percentile can sit just outside its order-statistic
    # interval when samples are few; clamp the bar there rather than drop the point.
    low = [max(0.0, e["value"] - (e["ci_low"] if e["ci_low"] is not None else e["value"])) for _, e in points]
    high = [max(0.0, (e["ci_high"] if e["ci_high"] is not None else e["value"]) - e["value"]) for _, e in points]
    axis.errorbar([x for x, _ in points], values, yerr=[low, high], marker="o", capsize=3, label=label)


def plot_sweep(xs: list[float], summaries: list[dict], x_label: str, path: Path) -> Path:
    """TTFT, TPOT (p50 and p99 with 95% CI bars) and throughput against concurrency or rate."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for axis, name, title in ((axes[0], "ttft", "TTFT (ms)"), (axes[1], "tpot", "TPOT (ms)")):
        dists = [s["latency_ms"].get(name) or {} for s in summaries]
        for q in (50.0, 99.0):
            _errorbar(axis, xs, dists, percentile_key(q), f"{percentile_key(q)}")
        if any((s["latency_ms"].get("ttft_from_arrival") or {}).get("n") for s in summaries) and name == "ttft":
            arrival = [s["latency_ms"].get("ttft_from_arrival") or {} for s in summaries]
            _errorbar(axis, xs, arrival, "p99", "p99 from arrival")
        axis.set_xlabel(x_label)
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[2].plot(xs, [s.get("output_throughput_tps") or 0 for s in summaries], marker="o", label="output tok/s")
    goodput = [(s.get("goodput") or {}).get("goodput_rps") for s in summaries]
    twin = axes[2].twinx()
    twin.plot(xs, [s.get("request_throughput_rps") or 0 for s in summaries], marker="s", color="tab:orange", label="req/s")
    if any(g is not None for g in goodput) and any((s.get("goodput") or {}).get("slos_ms") for s in summaries):
        twin.plot(xs, [g or 0 for g in goodput], marker="^", color="tab:green", label="goodput req/s")
    axes[2].set_xlabel(x_label)
    axes[2].set_ylabel("output tokens / s")
    twin.set_ylabel("requests / s")
    axes[2].legend(loc="upper left")
    twin.legend(loc="lower right")
    axes[2].grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
