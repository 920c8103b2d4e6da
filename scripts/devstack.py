"""``make run``: the whole stack on this machine, for development.

Starts an embedded JetStream nats-server (unless ``REALTIME_NATS_URL`` points elsewhere), the stats
collector, the gateway on :5006 and the demo traffic simulator (``--no-simulate`` or
``make run SIMULATE=0`` leaves it out), and prints a dev admin token and the URL to use.

Ctrl-C (or SIGTERM) stops everything in order and exits 0: the simulator, the gateway (it drains its
NATS connection), the collector (it saves its state into NATS), then NATS. Every child runs in its
own session, so the terminal's SIGINT reaches this launcher alone and nothing stops early.

The run directory (``--run-dir``, default ``.run``) holds the NATS store, config and log and the dev
JWT secret (``dev-jwt-secret``), so printed tokens survive restarts. ``--nats-port`` and
``--metrics-port`` fall back to a free port when theirs is taken; 0 asks for a free one outright.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import uuid
from pathlib import Path
from typing import Final, NoReturn

from gateway.devtoken import mint_token
from scripts.processes import ROOT, ChildProcess, NatsServer, free_port, http_status, port_open

# The API document's example platform: users and generations that predate the event stream.
DEMO_BASELINE: Final = ("--total-users", "5432", "--websites-generated", "1203", "--images-generated", "3847")
# The usual ports, used when free so bookmarks and `nats` CLI defaults keep working.
NATS_PORT: Final = 4222
METRICS_PORT: Final = 9106
SIMULATED_EVENTS_PER_SECOND: Final = 20
# A working day, so the printed token outlives a development session.
TOKEN_TTL_SECONDS: Final = 8 * 3600
# The gateway is ready once NATS answers; its first start also builds the JetStream buckets.
GATEWAY_READY_SECONDS: Final = 30
SEED_SECONDS: Final = 60


def _port(wanted: int) -> int:
    """``wanted`` when it is free, else (and for 0) any free port."""
    return wanted if wanted and not port_open(wanted) else free_port()


def _dev_secret(run_dir: Path) -> str:
    path = run_dir / "dev-jwt-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def _wait_for_a_child_to_exit() -> None:
    """Block until any child exits, without reaping it (``ChildProcess`` collects its own status)."""
    os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)


def _python(*args: str, name: str, env: dict[str, str]) -> ChildProcess:
    child = ChildProcess([sys.executable, *args], name=name, env=env)
    child.start()
    return child


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("REALTIME_PORT", "5006")))
    parser.add_argument("--nats-port", type=int, default=NATS_PORT, help="embedded nats-server's port (0: any)")
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT, help="collector's /metrics port (0: any)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="NATS store and log, dev JWT secret")
    parser.add_argument("--no-simulate", action="store_true", help="do not start the demo traffic simulator")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    run_dir: Path = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    secret = os.environ.get("REALTIME_JWT_SECRET") or _dev_secret(run_dir)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too when started with it ignored (in the background)
        signal.signal(signum, _interrupt)
    children: list[ChildProcess] = []  # in stop order: the last one started first
    try:
        nats_url = os.environ.get("REALTIME_NATS_URL", "")
        if not nats_url:
            nats = NatsServer(workdir=run_dir, port=_port(args.nats_port))
            children.insert(0, nats.child)
            nats.start()
            nats_url = nats.url
        env = {"REALTIME_JWT_SECRET": secret, "REALTIME_NATS_URL": nats_url, "REALTIME_PORT": str(args.port)}
        metrics_port = _port(args.metrics_port)
        collector_env = {**env, "REALTIME_METRICS_PORT": str(metrics_port)}
        children.insert(0, _python("-m", "stats_collector", name="collector", env=collector_env))
        gateway = _python("-m", "gateway", name="gateway", env=env)
        children.insert(0, gateway)
        if not args.no_simulate:
            _seed(env, log_path=run_dir / "seed.log")
            rate = str(SIMULATED_EVENTS_PER_SECOND)
            children.insert(0, _python("-m", "stats_collector.simulate", "--rate", rate, name="simulator", env=env))
        ready = f"http://127.0.0.1:{args.port}/readyz"
        gateway.wait_until(lambda: http_status(ready) == 200, timeout=GATEWAY_READY_SECONDS, what="the gateway")
        print(
            _banner(
                port=args.port,
                nats_url=nats_url,
                metrics_port=metrics_port,
                secret=secret,
                simulate=not args.no_simulate,
            ),
            flush=True,
        )
        _wait_for_a_child_to_exit()
        for child in children:
            if not child.alive:
                print(f"devstack: {child.name} exited with {child.returncode}; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:
            if (code := child.stop()) is not None:
                print(f"  stopped {child.name} (exit {code})", flush=True)


def _seed(env: dict[str, str], *, log_path: Path) -> None:
    """Give the simulated platform its baseline (the users that predate the stream, as in the API document)."""
    seed = ChildProcess(
        [sys.executable, "-m", "stats_collector", "seed", *DEMO_BASELINE], name="seed", env=env, log_path=log_path
    )
    seed.start()
    code = seed.reap(timeout=SEED_SECONDS)
    if code != 0:
        raise RuntimeError(f"seeding the demo baseline failed (exit {code}); see {log_path}")


def _banner(*, port: int, nats_url: str, metrics_port: int, secret: str, simulate: bool) -> str:
    token = mint_token(
        secret=secret, roles=["Admin"], subject=str(uuid.uuid4()), ttl_seconds=TOKEN_TTL_SECONDS, name="dev-admin"
    )
    traffic = f"on ({SIMULATED_EVENTS_PER_SECOND} events/s)" if simulate else "off"
    return (
        f"\n  realtime-admin is up\n"
        f"  NATS:      {nats_url}\n"
        f"  Hub:       http://localhost:{port}/hubs/admin\n"
        f"  Dashboard: http://localhost:{port}/#token={token}\n"
        f"  Contracts: http://localhost:{port}/docs/api#token={token}\n"
        f"  Health:    http://localhost:{port}/api/admin/realtime/health\n"
        f"  Collector: http://localhost:{metrics_port}/metrics\n"
        f"  Demo traffic: {traffic}\n\n"
        f"  Dev admin token ({TOKEN_TTL_SECONDS // 3600} h):\n  {token}\n\n"
        f"  Ctrl-C stops everything.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
