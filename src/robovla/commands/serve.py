"""`robovla serve`: a policy server for a checkpoint (OpenVLA REST `/act`, openpi websocket, metrics)."""

from __future__ import annotations

import argparse
import logging
import os
import time

HELP = ("Serve a checkpoint (a VLA or a Diffusion Policy) over HTTP (OpenVLA-compatible /act, /act/batch) and "
        "websocket (openpi protocol).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None,
                        help="require this key on every request except /health (default: $ROBOVLA_API_KEY)")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--quantization", default=None, choices=["int8", "int4"],
                        help="weight-only quantization of the language model")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile vision, prefill and decode; compiles before serving (see --no-warm-up)")
    parser.add_argument("--compile-mode", default="lean", choices=["lean", "frozen"],
                        help="lean (default): the graphs share the model's weights and are cached across restarts; "
                             "frozen: weights packed into each graph (more memory, no cache, every start compiles)")
    parser.add_argument("--compile-cache", default=None, metavar="DIR",
                        help="where compiled code is kept between starts (default: $ROBOVLA_COMPILE_CACHE or "
                             "~/.cache/robovla/compile)")
    parser.add_argument("--no-compile-cache", dest="use_compile_cache", action="store_false",
                        help="compile from nothing at every start")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="with --compile: start serving at once and compile at the first requests instead")
    parser.add_argument("--batch-invariant", action="store_true",
                        help="run each observation in its own model call, so an answer never depends on what shared "
                             "its batch (bf16 sums in a batch-dependent order); costs the batching speed-up")
    parser.add_argument("--max-batch-size", type=int, default=16, help="observations per model call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long a request may wait for others to share its model call")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="observations that may wait; more get 503 with Retry-After")
    parser.add_argument("--max-body-mb", type=float, default=None,
                        help="largest request body in MiB (default: one observation at --max-image-side)")
    parser.add_argument("--max-image-side", type=int, default=2048, help="largest image side accepted, in pixels")
    parser.add_argument("--action-tokens-only", action="store_true",
                        help="greedy over the 256 action tokens only, as `robovla eval` decodes (default: the whole "
                             "vocabulary, the reference's semantics)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import robovla
    from robovla.errors import RobovlaError
    from robovla.serve import ServerConfig, create_app, serve_forever
    from robovla.serve.auth import API_KEY_ENV

    if not 0 <= args.port <= 65535:
        raise RobovlaError(f"--port must be in 0..65535, got {args.port}")
    config = ServerConfig(
        host=args.host, port=args.port, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_body_bytes=None if args.max_body_mb is None else int(args.max_body_mb * 1024 * 1024),
        max_image_side=args.max_image_side, restrict_to_actions=args.action_tokens_only,
        batch_invariant=args.batch_invariant,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    from robovla.diffusion.runner import DiffusionRunner, is_diffusion_checkpoint

    logger = logging.getLogger("robovla.serve")
    if is_diffusion_checkpoint(args.checkpoint):
        vla_only = [flag for flag, given in (("--compile", args.compile), ("--quantization", args.quantization),
                                             ("--dtype", args.dtype != "float32")) if given]
        if vla_only:
            raise RobovlaError(f"{', '.join(vla_only)}: VLA options, but {args.checkpoint} holds a Diffusion Policy")
        model = DiffusionRunner.from_pretrained(args.checkpoint, device=args.device)
    else:
        model = robovla.load_pretrained(args.checkpoint, dtype=args.dtype, device=args.device,
                                        quantization=args.quantization)
    logger.info("start-up: checkpoint loaded in %.1f s", time.perf_counter() - start)
    if args.compile:
        compiled = time.perf_counter()
        cache = (args.compile_cache or True) if args.use_compile_cache and args.compile_mode == "lean" else False
        policy = robovla.Policy(model, restrict_to_actions=config.restrict_to_actions).compile(args.compile_mode, cache)
        if args.warm_up:
            logger.info("compiling before serving, so that no request waits for it")
            report = policy.warm_up(on_call=lambda batch, tokens, seconds: logger.info(
                "start-up: batch %d, prompt %d tokens: %.1f s", batch, tokens, seconds))
            cached = "saved to the cache" if report.cache_saved else "cache unchanged" if cache else "no cache"
            logger.info("start-up: compiled in %.1f s (%d graphs built, %d from the cache; %s)",
                        time.perf_counter() - compiled, report.graphs_built, report.graphs_from_cache, cached)
    logger.info("start-up: %.1f s in all", time.perf_counter() - start)
    app = create_app(model, config, model_name=Path(args.checkpoint).resolve().name)
    auth = "API key required" if config.api_key else "no API key"
    logger.info("serving %s on http://%s:%d (%s)", args.checkpoint, config.host, config.port, auth)
    try:
        serve_forever(app, config, log_level=args.log_level)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once its graceful shutdown is done: a normal stop
        logger.info("stopped")
    return 0
