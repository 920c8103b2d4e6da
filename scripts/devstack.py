"""``make run``: the whole stack on this machine, for development.

Starts an embedded JetStream nats-server (unless ``REALTIME_NATS_URL`` points elsewhere), the stats
collector, the gateway on :5006 and the demo traffic simulator (``--no-simulate`` or
``make run SIMULATE=0`` leaves it out), and prints a dev admin token and the URL to use. Ctrl-C
stops everything.
The dev JWT secret is kept in ``.run/dev-jwt-secret`` so printed tokens survive restarts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from gateway.devtoken import mint_token

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
DEMO_BASELINE = ("--total-users", "5432", "--websites-generated", "1203", "--images-generated", "3847")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, *, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"devstack: {url} process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own localhost probe
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"devstack: {url} did not become ready in {timeout}s")


def _dev_secret() -> str:
    path = RUN_DIR / "dev-jwt-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _start_nats() -> tuple[str, subprocess.Popen[bytes] | None]:
    if os.environ.get("REALTIME_NATS_URL"):
        return os.environ["REALTIME_NATS_URL"], None
    port = 4222 if _port_free(4222) else _free_port()
    binary = Path(sys.prefix) / "bin" / "nats-server"
    store = RUN_DIR / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log = (RUN_DIR / "nats.log").open("ab")
    process = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 15
    while _port_free(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("devstack: nats-server did not start; see .run/nats.log")
        time.sleep(0.05)
    return f"nats://127.0.0.1:{port}", process


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("REALTIME_PORT", "5006")))
    parser.add_argument("--no-simulate", action="store_true", help="do not start the demo traffic simulator")
    args = parser.parse_args()
    RUN_DIR.mkdir(exist_ok=True)
    secret = os.environ.get("REALTIME_JWT_SECRET") or _dev_secret()
    nats_url, nats_process = _start_nats()
    children: list[subprocess.Popen[bytes]] = [p for p in (nats_process,) if p is not None]
    env = {**os.environ, "REALTIME_JWT_SECRET": secret, "REALTIME_NATS_URL": nats_url, "REALTIME_PORT": str(args.port)}
    metrics_port = 9106 if _port_free(9106) else _free_port()
    collector = subprocess.Popen(
        [sys.executable, "-m", "stats_collector"], cwd=ROOT, env={**env, "REALTIME_METRICS_PORT": str(metrics_port)}
    )
    children.insert(0, collector)
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env)
    children.insert(0, gateway)
    if not args.no_simulate:
        # The simulated users predate the stream, like the API document's example platform.
        subprocess.run(
            [sys.executable, "-m", "stats_collector", "seed", *DEMO_BASELINE],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        simulator = subprocess.Popen(
            [sys.executable, "-m", "stats_collector.simulate", "--rate", "20"], cwd=ROOT, env=env
        )
        children.insert(0, simulator)
    try:
        _wait_http(f"http://127.0.0.1:{args.port}/readyz", timeout=30, process=gateway)
        token = mint_token(
            secret=secret, roles=["Admin"], subject=str(uuid.uuid4()), ttl_seconds=8 * 3600, name="dev-admin"
        )
        print(
            f"\n  realtime-admin is up\n"
            f"  NATS:      {nats_url}\n"
            f"  Hub:       http://localhost:{args.port}/hubs/admin\n"
            f"  Dashboard: http://localhost:{args.port}/#token={token}\n"
            f"  Health:    http://localhost:{args.port}/api/admin/realtime/health\n"
            f"  Collector: http://localhost:{metrics_port}/metrics\n"
            f"  Demo traffic: {'off' if args.no_simulate else 'on (20 events/s)'}\n\n"
            f"  Dev admin token (8 h):\n  {token}\n\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, _interrupt)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # In order: simulator, gateway (it drains its NATS connection), collector (saves its state), NATS last.
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
