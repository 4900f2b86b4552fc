"""The `serve-app` command: serve the graph locally, prepare models, compress and evaluate."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from typing import NoReturn

from serve_app.config import AppConfig, load_config


def _load(args: argparse.Namespace) -> AppConfig:
    config = load_config(args.config) if args.config else AppConfig()
    if getattr(args, "model", None):
        if len(config.models) != 1:
            raise SystemExit(f"serve-app: --model replaces the model of a one-model config; {args.config} lists "
                             f"{len(config.models)} models (set each one's model.source there)")
        config.models[0].model.source = args.model
    return config


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from serve_app.platform.models import resolve_model_path

    for view in _load(args).model_views():
        print(resolve_model_path(view.model))
    return 0


def _isolate_engine_cpus(config: AppConfig) -> None:
    """CPU engines: pin Ray and the stages (started next) to the cores the engine does not compute on."""
    from serve_app.platform.cpu_isolation import pin_graph_process, plan_core_split

    views = config.model_views()
    if all(view.engine.backend == "simulated" for view in views):
        return  # simulated engines compute nothing: no cores to set apart
    if (not all(view.engine.isolate_cpus for view in views) or any(view.model_deployment.num_gpus for view in views)
            or not hasattr(os, "sched_setaffinity")):
        return
    # Several CPU engines share the engine cores (the largest tensor-parallel size sets how many).
    engine = max((view.engine for view in views), key=lambda e: e.num_workers)
    split = plan_core_split(sorted(os.sched_getaffinity(0)), engine.num_workers, engine.cpu_omp_threads_bind)
    if split is not None:
        pin_graph_process(split)
        # The engines learn their cores from the config every model replica gets (no environment variable).
        for served in config.models:
            served.engine.engine_cpus = list(split.engine)
        where = ("share them (two cores: too few to set one apart)" if split.is_shared
                 else f"run on {list(split.graph)}")
        print(f"CPU isolation: engine computes on cores {list(split.engine)}, Ray and the stages {where} "
              "(engine.isolate_cpus: false turns this off)", flush=True)


# How long `serve-app serve` waits after Ctrl-C / SIGTERM for serve_app to stop before it kills what it started.
STOP_TIMEOUT_S = 60.0


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.auth.enabled:
        from serve_app.ingress.auth import load_key_digests

        try:
            load_key_digests(config.auth)  # fail here, before Ray starts, not in every ingress replica
        except ValueError as exc:
            print(f"serve-app: {exc}", file=sys.stderr, flush=True)
            return 2
    if not sys.platform.startswith("linux"):
        return _serve(args, config)
    # Serve from a child in a session of its own: Ctrl-C (SIGINT to the terminal's process group) and a script's
    # SIGTERM to this process group reach only this process, which passes them on once. Ray's daemons never get
    # them (they used to, and died in disorder while Serve was stopping, leaving vLLM engines behind).
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        _serve_in_own_session(args, config, parent)  # never returns
    return _supervise(child)


def _serve_in_own_session(args: argparse.Namespace, config: AppConfig, parent: int) -> NoReturn:
    """The forked child: serve, then exit with its status (never return into the parent's code)."""
    from serve_app.server.engine_guard import set_parent_death_signal

    code = 1
    try:
        os.setsid()
        set_parent_death_signal(signal.SIGTERM)  # the parent is gone (even SIGKILLed): stop as on SIGTERM
        if os.getppid() == parent:
            code = _serve(args, config)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported here as it would have been without the fork
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _supervise(child: int) -> int:
    """Wait for the serving child and return its exit status. The first SIGINT/SIGTERM is passed on to it; if it
    has not exited STOP_TIMEOUT_S later (or at a second signal), it is killed. Anything it leaves behind in its
    session is killed once it exits: Ray's processes, and with them (engine_guard.py) the vLLM engines."""
    deadline = None

    def _forward(signum, _frame):
        nonlocal deadline
        if deadline is None:
            os.kill(child, signum)
            deadline = time.monotonic() + STOP_TIMEOUT_S
        else:
            deadline = time.monotonic()  # asked again: stop waiting

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    # Not reaped yet (WNOWAIT): its pid, the id of its session, cannot be reused until _kill_session is done.
    while os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if deadline is not None and time.monotonic() >= deadline:
            print(f"serve_app did not stop within {STOP_TIMEOUT_S:g} s: killing it and the Ray processes it started",
                  file=sys.stderr, flush=True)
            break
        time.sleep(0.2)
    _kill_session(child)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


def _kill_session(session: int) -> None:
    """SIGKILL every process in a session (Ray starts its workers in process groups of their own)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == session:
                    os.kill(int(entry), signal.SIGKILL)


class _StopRequested(Exception):
    """SIGINT or SIGTERM reached the serving process."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum, _frame):
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # once: nothing interrupts the shutdown that follows
    raise _StopRequested(signum)


def _serve(args: argparse.Namespace, config: AppConfig) -> int:
    """Start Ray and the graph, serve until SIGINT/SIGTERM, then shut Serve and Ray down."""
    from serve_app.platform.models import resolve_model_path
    from serve_app.server.engine_args import resolved_dtype

    # Prepare (convert) the models once here rather than in every deployment at once.
    for view in config.model_views():
        path = resolve_model_path(view.model)
        print(f"Model: {view.model.resolved_name()} from {path}", flush=True)
        try:
            resolved_dtype(view, path)  # a dtype the engine cannot run fails here, not in each replica
        except ValueError as exc:
            print(f"serve-app: {exc}", file=sys.stderr, flush=True)
            return 2
    from serve_app.platform.ray_env import apply_ray_environment

    apply_ray_environment(config)  # before Ray is imported and started: every Ray process reads it
    import ray
    from ray import serve

    from serve_app.app import build_graph

    _isolate_engine_cpus(config)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=args.verbose,
             **({"_metrics_export_port": args.ray_metrics_port} if args.ray_metrics_port else {}))
    # After ray.init, which sets a SIGTERM handler of its own (exit without stopping Serve).
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    serving = False
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_graph(config), name="serve_app", route_prefix="/")
        names = ", ".join(f"'{name}'" for name in config.served_names())
        print(f"serve_app is serving {names} on http://{args.host}:{args.port}/v1 "
              f"(playground: http://{args.host}:{args.port}/). Ctrl-C stops it.", flush=True)
        serving = True
        while True:
            time.sleep(3600)  # until SIGINT or SIGTERM
    except _StopRequested as stop:
        return 0 if serving else 128 + stop.signum  # stopped before it served: as if killed by that signal
    finally:
        print("Stopping serve_app...", flush=True)
        serve.shutdown()
        ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve-app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="start a local Ray cluster and serve the graph (foreground)")
    serve_p.add_argument("--config", help="YAML AppConfig file (default: built-in defaults, SmolLM2 on CPU)")
    serve_p.add_argument("--model", help="override model.source: default, tiny, a HF id or a local path")
    serve_p.add_argument("--host", default="127.0.0.1")
    serve_p.add_argument("--port", type=int, default=8000)
    serve_p.add_argument("--num-cpus", type=int, default=max(8, 4 * (os.cpu_count() or 2)),
                         help="logical CPUs Ray may hand out (deployments take fractions)")
    serve_p.add_argument("--verbose", action="store_true", help="show replica logs in this terminal")
    serve_p.add_argument("--ray-metrics-port", type=int, default=None,
                         help="port of Ray's Prometheus metrics endpoint (every replica's engine gauges)")
    serve_p.set_defaults(func=cmd_serve)

    models_p = sub.add_parser("models", help="model checkpoints")
    models_sub = models_p.add_subparsers(dest="models_command", required=True)
    prepare_p = models_sub.add_parser("prepare", help="convert/build the configured model into the cache; prints its path")
    prepare_p.add_argument("--config")
    prepare_p.add_argument("--model", help="default (SmolLM2 from GGUF), tiny, or a path")
    prepare_p.set_defaults(func=cmd_models_prepare)

    try:
        from serve_app.compress.cli import add_subcommands
    except ImportError:
        add_subcommands = None
    if add_subcommands is not None:
        add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
