"""``python -m bench.run_gateway --loop uvloop|asyncio [--gc-stats FILE] [gateway flags]``.

Runs the unchanged gateway (``gateway.__main__.main``) under the chosen event loop, with garbage
collector pauses timed by :mod:`bench.gcwatch`. The gateway itself has no uvloop switch; the policy
installed here makes ``aiohttp.web.run_app``'s new loop a uvloop one.
"""

from __future__ import annotations

import argparse
import sys

from bench import gcwatch


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_gateway")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--gc-stats", default=None, help="write GC pause statistics here at exit")
    args, rest = parser.parse_known_args()
    gcwatch.use_loop(args.loop)
    if args.gc_stats:
        gcwatch.install(args.gc_stats)
    from gateway.__main__ import main as gateway_main

    return gateway_main(rest)


if __name__ == "__main__":
    sys.exit(main())
