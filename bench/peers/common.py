"""What the peer servers share: command line, event loop choice, GC timing, open-file limit."""

from __future__ import annotations

import argparse
import resource

from bench import gcwatch


def parse_args(prog: str, *, modes: tuple[str, ...] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--gc-stats", default=None)
    if modes:
        parser.add_argument("--mode", choices=modes, default=modes[0])
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gcwatch.use_loop(args.loop)
    if args.gc_stats:
        gcwatch.install(args.gc_stats)
    return args
