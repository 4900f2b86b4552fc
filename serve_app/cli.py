"""The `serve-app` command: serve the graph locally, prepare models, compress and evaluate."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from serve_app.config import AppConfig, load_config


def _load(args: argparse.Namespace) -> AppConfig:
    config = load_config(args.config) if args.config else AppConfig()
    if getattr(args, "model", None):
        config.model.source = args.model
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
    if (not all(view.engine.isolate_cpus for view in views) or any(view.model_deployment.num_gpus for view in views)
            or not hasattr(os, "sched_setaffinity")):
        return
    # Several CPU engines share the engine cores (the largest tensor-parallel size sets how many).
    engine = max((view.engine for view in views), key=lambda e: e.num_workers)
    split = plan_core_split(sorted(os.sched_getaffinity(0)), engine.num_workers, engine.cpu_omp_threads_bind)
    if split is not None:
        pin_graph_process(split)
        print(f"CPU isolation: engine computes on cores {list(split.engine)}, Ray and the stages run on "
              f"{list(split.graph)} (engine.isolate_cpus: false turns this off)", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.auth.enabled:
        from serve_app.ingress.auth import load_key_digests

        try:
            load_key_digests(config.auth)  # fail here, before Ray starts, not in every ingress replica
        except ValueError as exc:
            print(f"serve-app: {exc}", file=sys.stderr, flush=True)
            return 2
    from serve_app.platform.models import resolve_model_path

    # Prepare (convert) the models once here rather than in every deployment at once.
    for view in config.model_views():
        print(f"Model: {view.model.resolved_name()} from {resolve_model_path(view.model)}", flush=True)
    from serve_app.platform.ray_env import ray_environment

    for key, value in ray_environment(config).items():
        os.environ.setdefault(key, value)  # before Ray is imported and started: every Ray process reads it
    import ray
    from ray import serve

    from serve_app.app import build_graph

    _isolate_engine_cpus(config)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=args.verbose)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_graph(config), name="serve_app", route_prefix="/")
    names = ", ".join(f"'{name}'" for name in config.served_names())
    print(f"serve_app is serving {names} on http://{args.host}:{args.port}/v1 "
          f"(playground: http://{args.host}:{args.port}/). Ctrl-C stops it.", flush=True)
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        print("Stopping serve_app...", flush=True)
        serve.shutdown()
        ray.shutdown()
    return 0


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
