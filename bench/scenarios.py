"""The scenarios S1-S6, each run the same way against every server that can take it.

A :class:`ServerSpec` names a server implementation and event loop; :class:`Bench` holds the run's
working directory, the infrastructure nats-server (core 1) and the results. Every scenario starts a
fresh measured server (core 0) and fresh load clients (core 1), and reports every figure with the load
client's CPU: ``client_saturated`` is set when one load-client process used more than 90% of its core.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import histogram
from bench.procs import (
    CLIENT_CORE,
    JWT_SECRET,
    ROOT,
    SERVER_CORE,
    LoadClient,
    Proc,
    checkout_revision,
    cpu_seconds,
    interrupt_seconds,
    pinned,
    start_nats,
    start_server,
)
from bench.publishers import NatsPublisher, PeerPublisher, Publisher, RestPublisher, Target, publish_at

SATURATED_CPU_FRACTION: Final = 0.9
# One load-client process holds at most this many sockets (the open-file limit is 20,000 here).
CONNS_PER_CLIENT: Final = 12_000
SOURCES: Final = [f"127.0.0.{n}" for n in range(1, 9)]
P99_LIMIT_MS: Final = 100.0
GROUPS: Final = ["analytics", "alerts", "user-activity"]
OFFICIAL_CLIENT: Final = ROOT / "tests" / "js" / "fanout_client.mjs"


# The gateway's variants: label suffix -> the REALTIME_* settings that make it (loop stays uvloop).
GATEWAY_VARIANTS: Final[dict[str, dict[str, str]]] = {"core-nats": {"REALTIME_FANOUT_STREAM": "false"}}


@dataclass(frozen=True)
class ServerSpec:
    """A measured server: implementation, event loop, peer mode; for ours a variant or a git revision.

    Our gateway's labels: ``ours`` (as shipped, on uvloop), ``ours/asyncio``, ``ours/<variant>`` (a
    :data:`GATEWAY_VARIANTS` key) and ``ours@<rev>`` (the gateway as it was at a git revision, uvloop).
    The peers' labels are ``<impl>[-<mode>]/<loop>``.
    """

    impl: str  # gateway | aiohttp | socketio | nats
    loop: str  # asyncio | uvloop | go
    mode: str = ""
    variant: str = ""  # ours only: a GATEWAY_VARIANTS key
    rev: str = ""  # ours only: a git revision (--baseline-rev)

    @property
    def label(self) -> str:
        if self.impl == "gateway":
            suffix = self.variant or ("" if self.loop == "uvloop" else self.loop)
            return f"ours{'@' + self.rev if self.rev else ''}{'/' + suffix if suffix else ''}"
        return f"{self.impl}{'-' + self.mode if self.mode else ''}/{self.loop}"

    @property
    def client_kind(self) -> str:
        return {"gateway": "signalr", "aiohttp": "raw", "socketio": "socketio", "nats": "nats"}[self.impl]

    @property
    def gateway_env(self) -> dict[str, str]:
        return dict(GATEWAY_VARIANTS.get(self.variant, {}))

    @classmethod
    def parse(cls, label: str) -> ServerSpec:
        name, _, tail = label.partition("/")
        if name == "ours" or name.startswith("ours@"):
            rev = name.partition("@")[2]
            if tail in ("", "uvloop", "asyncio"):
                return cls("gateway", tail or "uvloop", rev=rev)
            if tail in GATEWAY_VARIANTS:
                return cls("gateway", "uvloop", variant=tail, rev=rev)
            raise ValueError(f"unknown variant of ours: {label!r}")
        impl, _, mode = name.partition("-")
        return cls(impl, tail, mode)


class Meter:
    """CPU of the server, nats-server and load clients over an interval."""

    def __init__(self, server: Proc | None, nats: Proc | None, clients: list[LoadClient]) -> None:
        self.server = server
        self.nats = nats
        self.clients = clients
        self._start: tuple[float, float, float, list[float]] = (0.0, 0.0, 0.0, [])

    def start(self) -> None:
        self._start = (
            time.monotonic(),
            self.server.cpu() if self.server else 0.0,
            self.nats.cpu() if self.nats else 0.0,
            [client.cpu() for client in self.clients],
        )

    def stop(self) -> dict[str, Any]:
        started, server0, nats0, clients0 = self._start
        wall = max(time.monotonic() - started, 1e-9)
        clients = [(client.cpu() - before) / wall for client, before in zip(self.clients, clients0, strict=True)]
        return {
            "wall_seconds": wall,
            "server_cpu_seconds": (self.server.cpu() - server0) if self.server else 0.0,
            "server_cpu_pct": 100 * ((self.server.cpu() - server0) / wall if self.server else 0.0),
            "nats_cpu_pct": 100 * ((self.nats.cpu() - nats0) / wall if self.nats else 0.0),
            "client_cpu_seconds": wall * sum(clients),
            "client_cpu_pct": 100 * sum(clients),
            "client_cpu_max_pct": 100 * max(clients, default=0.0),
            "client_saturated": max(clients, default=0.0) > SATURATED_CPU_FRACTION,
        }


SUMMED: Final = (
    "received",
    "open",
    "paused_open",
    "connected",
    "failed",
    "closed_by_peer",
    "reconnects",
    "ready_count",
    "shortfall",
    "short_connections",
)


def merge_stats(answers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per tag: sums of counters, merged histogram, min of ``min_count``, concatenated lists."""
    merged: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for tag, entry in answer["tags"].items():
            into = merged.setdefault(
                tag, {"hist": {}, "ready_times": [], "after": [], "min_count": None, **dict.fromkeys(SUMMED, 0)}
            )
            into["hist"] = histogram.merge([into["hist"], entry["hist"]])
            into["ready_times"] += entry.get("ready_times", [])
            into["after"] += entry.get("after", [])
            for key in SUMMED:
                into[key] += entry.get(key, 0)
            if entry["open"] > entry["paused_open"]:
                low = entry["min_count"]
                into["min_count"] = low if into["min_count"] is None else min(into["min_count"], low)
    return merged


class Clients:
    """A few load-client processes used as one."""

    def __init__(self, clients: list[LoadClient]) -> None:
        self.clients = clients
        self.errors: Counter[str] = Counter()

    @classmethod
    async def start(cls, count: int) -> Clients:
        return cls(list(await asyncio.gather(*(LoadClient.start() for _ in range(count)))))

    async def connect(self, spec: dict[str, Any], count: int, first_index: int = 0) -> dict[str, Any]:
        """Split ``count`` connections over the processes; returns totals and the overall rate."""
        share = math.ceil(count / len(self.clients))
        calls = []
        for n, client in enumerate(self.clients):
            part = min(share, count - n * share)
            if part > 0:
                calls.append(
                    client.call(
                        "connect",
                        spec={**spec, "count": part, "first_index": first_index + n * share, "sources": SOURCES},
                    )
                )
        started = time.monotonic()
        answers = await asyncio.gather(*calls)
        seconds = time.monotonic() - started
        established = sum(answer["established"] for answer in answers)
        return {
            "established": established,
            "failed": sum(answer["failed"] for answer in answers),
            "seconds": seconds,
            "per_second": established / max(seconds, 1e-9),
        }

    async def stats(self, **arguments: Any) -> dict[str, dict[str, Any]]:
        answers = await asyncio.gather(*(client.call("stats", **arguments) for client in self.clients))
        for answer in answers:
            self.errors.update(answer.get("errors", {}))
        return merge_stats(answers)

    async def each(self, cmd: str, **arguments: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(client.call(cmd, **arguments) for client in self.clients)))

    async def stop(self) -> None:
        await asyncio.gather(*(client.stop() for client in self.clients), return_exceptions=True)


def latency(hist: dict[int, int]) -> dict[str, Any]:
    return histogram.summary(hist)


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


class Bench:
    """One run: working directory, infrastructure NATS, profile, results."""

    def __init__(self, profile: dict[str, Any], workdir: Path) -> None:
        self.profile = profile
        self.workdir = workdir
        self.nats: Proc | None = None
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        # Short commit id -> an unpacked tree of that revision (``ours@<commit>``).
        self.revisions: dict[str, Path] = {}

    def add_revision(self, rev: str) -> str:
        """Unpack git revision ``rev`` for ``ours@<commit>`` servers; returns the short commit id."""
        root, commit = checkout_revision(rev, self.workdir)
        self.revisions[commit] = root
        return commit

    async def __aenter__(self) -> Bench:
        self.nats = await start_nats(self.workdir, core=CLIENT_CORE)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nats is not None:
            await self.nats.stop()

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # -- servers and connections ------------------------------------------------------------

    async def start(self, spec: ServerSpec, *, core: int = 0) -> Proc:
        if spec.impl == "nats":
            proc = await start_nats(self.workdir, core=core, name="nats-peer")
            proc.extra["base_url"] = ""
            return proc
        assert self.nats is not None
        root = self.revisions[spec.rev] if spec.rev else ROOT
        return await start_server(
            spec.impl,
            spec.loop,
            self.workdir,
            nats_url=self.nats.extra["url"],
            mode=spec.mode,
            env=spec.gateway_env,
            root=root,
            tag=spec.label.removeprefix("ours").replace("/", "-").replace("@", "at-").strip("-"),
        )

    def conn_spec(
        self,
        spec: ServerSpec,
        server: Proc,
        tag: str,
        *,
        groups: list[str] | None = None,
        group_of: list[str] | None = None,
        personal: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        conn: dict[str, Any] = {"kind": spec.client_kind, "tag": tag, "groups": groups or [], **extra}
        if group_of:
            conn["group_of"] = group_of
        if spec.impl == "nats":
            conn.update(url=server.extra["url"], subject="bench.s3")
            return conn
        conn.update(host="127.0.0.1", port=server.extra["port"])
        if spec.impl == "gateway":
            conn.update(secret=JWT_SECRET, user="bench-{i}")
        elif personal:
            conn["personal"] = "u-{i}"
        return conn

    async def publisher(self, spec: ServerSpec, server: Proc, path: str) -> Publisher:
        if spec.impl == "nats":
            return await NatsPublisher.connect(server.extra["url"], envelope=False)
        if spec.impl == "gateway":
            if path == "rest":
                from gateway.devtoken import mint_token

                token = mint_token(secret=JWT_SECRET, roles=["Admin"], subject="bench-publisher", ttl_seconds=21600)
                return RestPublisher(server.extra["base_url"], token)
            assert self.nats is not None
            return await NatsPublisher.connect(self.nats.extra["url"], envelope=True)
        return await PeerPublisher.connect(server.extra["base_url"])

    def meter(self, server: Proc | None, clients: Clients, spec: ServerSpec) -> Meter:
        return Meter(server, self.nats if spec.impl == "gateway" else None, clients.clients)

    # -- S1 echo ------------------------------------------------------------------------------

    async def s1(self, spec: ServerSpec) -> dict[str, Any]:
        cfg = self.profile["s1"]
        server = await self.start(spec)
        clients = await Clients.start(1)
        out: dict[str, Any] = {}
        try:
            for count in cfg["connections"]:
                tag = f"s1-{count}"
                opened = await clients.connect(self.conn_spec(spec, server, tag), count)
                runs = []
                for _ in range(cfg["runs"]):
                    meter = self.meter(server, clients, spec)
                    meter.start()
                    answer = (
                        await clients.each("echo", tag=tag, seconds=cfg["seconds"], payload_bytes=cfg["payload_bytes"])
                    )[0]
                    cpu = meter.stop()
                    runs.append(
                        {
                            "round_trips_per_s": answer["round_trips"] / answer["seconds"],
                            **latency({int(k): v for k, v in answer["hist"].items()}),
                            **cpu,
                        }
                    )
                out[str(count)] = {
                    "connections": opened["established"],
                    "failed": opened["failed"],
                    "runs": runs,
                    "round_trips_per_s": median([run["round_trips_per_s"] for run in runs]),
                    "p50_ms": median([run["p50_ms"] for run in runs]),
                    "p99_ms": median([run["p99_ms"] for run in runs]),
                    "server_cpu_pct": median([run["server_cpu_pct"] for run in runs]),
                    "client_cpu_max_pct": median([run["client_cpu_max_pct"] for run in runs]),
                    "client_saturated": any(run["client_saturated"] for run in runs),
                }
                await clients.each("close", tag=tag)
        finally:
            await clients.stop()
            out["gc"] = await server.stop()
        return out

    # -- S2 idle density -------------------------------------------------------------------------

    async def s2(self, spec: ServerSpec) -> dict[str, Any]:
        cfg = self.profile["s2"]
        server = await self.start(spec)
        top = max(cfg["levels"])
        clients = await Clients.start(max(1, math.ceil(top / CONNS_PER_CLIENT)))
        levels = []
        try:
            await asyncio.sleep(1.0)
            rss0 = server.rss()
            current = 0
            for level in cfg["levels"]:
                conn = self.conn_spec(spec, server, "s2", groups=["alerts"], concurrency=cfg["concurrency"])
                ramp = await clients.connect(conn, level - current, first_index=current)
                current = level
                meter = self.meter(server, clients, spec)
                meter.start()
                await asyncio.sleep(cfg["hold_seconds"])
                cpu = meter.stop()
                stats = (await clients.stats())["s2"]
                rss = server.rss()
                levels.append(
                    {
                        "target": level,
                        "open": stats["open"],
                        "failed_total": stats["failed"],
                        "closed_by_server": stats["closed_by_peer"],
                        "ramp_connections": ramp["established"],
                        "ramp_failed": ramp["failed"],
                        "ramp_per_second": ramp["per_second"],
                        "rss_kib": rss,
                        "rss_per_conn_kib": (rss - rss0) / max(stats["open"], 1),
                        "idle_server_cpu_pct": cpu["server_cpu_pct"],
                        "idle_client_cpu_max_pct": cpu["client_cpu_max_pct"],
                        "ramp_client_saturated": False,
                    }
                )
                self.log(f"S2 {spec.label} {level}: {levels[-1]['rss_per_conn_kib']:.1f} KiB/conn")
        finally:
            await clients.stop()
            gc_stats = await server.stop()
        return {
            "rss_start_kib": rss0,
            "levels": levels,
            "hold_seconds": cfg["hold_seconds"],
            "gc": gc_stats,
            "client_errors": dict(clients.errors.most_common(5)),
        }

    # -- S3 broadcast ceiling ----------------------------------------------------------------------

    async def _settle(self, clients: Clients, tag: str, expected: int) -> dict[str, Any]:
        """Wait until every connection has ``expected`` messages or nothing more arrives."""
        last = -1
        deadline = time.monotonic() + self.profile["s3"]["settle_max_seconds"]
        while True:
            stats = (await clients.stats(expected=expected))[tag]
            if stats.get("shortfall", 0) == 0 or stats["received"] == last or time.monotonic() > deadline:
                return stats
            last = stats["received"]
            await asyncio.sleep(0.25)

    async def _ladder(
        self,
        spec: ServerSpec,
        server: Proc,
        clients: Clients,
        publisher: Publisher,
        size: int,
        payload: int,
        probe: Clients | None = None,
    ) -> dict[str, Any]:
        cfg = self.profile["s3"]
        steps = []
        seq = 0
        for rate in cfg["rates"]:
            if rate * size > cfg["max_deliveries_per_s"]:
                break
            await clients.stats(reset=True, reset_counts=True)
            meter = self.meter(server, clients, spec)
            meter.start()
            windows: list[dict[int, int]] = []
            published = 0
            achieved = []
            durations = []
            probing = (
                asyncio.create_task(
                    probe.each(
                        "echo",
                        tag="probe",
                        seconds=cfg["windows"] * cfg["window_seconds"],
                        interval_seconds=cfg["probe_interval_seconds"],
                        payload_bytes=16,
                    )
                )
                if probe is not None
                else None
            )
            for _ in range(cfg["windows"]):
                answer = await publish_at(
                    publisher, rate=rate, seconds=cfg["window_seconds"], target=lambda _n: ("group", "alerts"),
                    size=payload, first_seq=seq,
                )  # fmt: skip
                seq += answer["published"]
                published += answer["published"]
                achieved.append(answer["achieved_rate"])
                durations.append(answer["seconds"])
                windows.append((await clients.stats(reset=True))["s3"]["hist"])
            final = await self._settle(clients, "s3", published)
            cpu = meter.stop()
            windows[-1] = histogram.merge([windows[-1], final["hist"]])
            total = histogram.merge(windows)
            received = histogram.count(total)
            p99s = [histogram.percentile(window, 0.99) for window in windows]
            step = {
                "rate": rate,
                "achieved_rate": statistics.median(achieved),
                "published": published,
                "received": received,
                "deliveries_per_s": received / sum(durations),
                "p50_ms": median([histogram.percentile(window, 0.5) for window in windows]),
                "p99_ms": median(p99s),
                "p99_windows_ms": p99s,
                "shortfall": final.get("shortfall", 0),
                "short_connections": final.get("short_connections", 0),
                "open": final["open"],
                "server_us_per_delivery": 1e6 * cpu["server_cpu_seconds"] / max(received, 1),
                "client_us_per_delivery": 1e6 * cpu["client_cpu_seconds"] / max(received, 1),
                **cpu,
            }
            if probing is not None:
                answers = await probing
                probed = histogram.merge([{int(k): v for k, v in answer["hist"].items()} for answer in answers])
                step["probe"] = {"round_trips": histogram.count(probed), **latency(probed)}
            step["ok"] = bool(step["p99_ms"] is not None and step["p99_ms"] <= P99_LIMIT_MS and not step["shortfall"])
            step["publisher_limited"] = step["achieved_rate"] < 0.9 * rate
            steps.append(step)
            self.log(
                f"S3 {spec.label} n={size} {payload}B rate={rate}/s: {step['deliveries_per_s']:.0f} deliv/s "
                f"p99={step['p99_ms']} short={step['shortfall']} srv={cpu['server_cpu_pct']:.0f}% "
                f"cli={cpu['client_cpu_max_pct']:.0f}% cli_us={step['client_us_per_delivery']:.1f} "
                f"srv_us={step['server_us_per_delivery']:.1f}"
                + (f" probe_p99={step['probe']['p99_ms']}" if "probe" in step else "")
            )
            if not step["ok"] or step["publisher_limited"]:
                break
        good = [step for step in steps if step["ok"]]
        best = max(good, key=lambda step: step["deliveries_per_s"]) if good else None
        at10 = next((step for step in steps if step["rate"] == cfg["reference_rate"]), None)
        return {
            "steps": steps,
            "ceiling_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
            "ceiling_rate": best["rate"] if best else 0,
            "ceiling_client_saturated": bool(best and best["client_saturated"]),
            "ceiling_server_us_per_delivery": best["server_us_per_delivery"] if best else None,
            "ceiling_client_us_per_delivery": best["client_us_per_delivery"] if best else None,
            # The fair loop: other connections' invocations answered during the broadcasts, at each rate.
            "probe": {step["rate"]: step["probe"] for step in steps if "probe" in step},
            "limited_by": self._limit(steps),
            "p99_at_reference_rate_ms": at10["p99_ms"] if at10 else None,
        }

    @staticmethod
    def _limit(steps: list[dict[str, Any]]) -> str:
        if not steps:
            return "no step ran"
        last = steps[-1]
        if last["ok"] and not last["publisher_limited"]:
            return "rate ladder ended (raise max_deliveries_per_s)"
        if last["publisher_limited"]:
            return "publisher could not keep the rate"
        server_busy = last.get("server_cpu_pct", 0.0) > 100 * SATURATED_CPU_FRACTION
        if last["client_saturated"]:
            if server_busy:
                return "server and load client both saturated"
            return "load client saturated (the figure measures the client)"
        if server_busy:
            return "server saturated (its core busy)" + (": messages missed" if last["shortfall"] else "")
        if last["shortfall"]:
            return "messages missed"
        return "p99 over 100 ms"

    async def s3(self, spec: ServerSpec, size: int, *, paths: list[str], payloads: list[int]) -> dict[str, Any]:
        cfg = self.profile["s3"]
        server = await self.start(spec)
        clients = await Clients.start(max(1, math.ceil(size / CONNS_PER_CLIENT)))
        out: dict[str, Any] = {"size": size, "paths": {}}
        probe: Clients | None = None
        try:
            if size in cfg.get("probe_sizes", ()) and spec.impl != "nats":
                probe = await Clients.start(1)
                probed = await probe.connect(self.conn_spec(spec, server, "probe"), cfg["probe_connections"], size)
                out["probe_connections"] = probed["established"]
            opened = await clients.connect(self.conn_spec(spec, server, "s3", groups=["alerts"]), size)
            out["connections"] = opened
            await clients.stats()  # collects connection errors into clients.errors
            out["client_errors"] = dict(clients.errors.most_common(5))
            if opened["failed"]:
                self.notes.append(f"S3 {spec.label} n={size}: {opened['failed']} connections failed")
            await asyncio.sleep(2.0)  # let the ramp's garbage go before the fan-out window starts
            await server.gc_snapshot()
            for path in paths:
                publisher = await self.publisher(spec, server, path)
                try:
                    if (
                        spec.impl == "gateway"
                        and path == "nats"
                        and cfg.get("official_check")
                        and "official" not in out
                    ):
                        out["official"] = await self.official_check(server, clients, publisher)
                    for payload in payloads:
                        out["paths"][f"{path}/{payload}"] = await self._ladder(
                            spec, server, clients, publisher, size, payload, probe
                        )
                    # Profiles of the gateway as it ships (and on asyncio), not of variants or old revisions,
                    # and of the bare pre-built-frame loop it is compared with.
                    profiled = (spec.impl == "gateway" and not spec.variant and not spec.rev) or spec.mode == "prebuilt"
                    if profiled and path == paths[0] and cfg.get("profile_size") == size:
                        # One rate for every profiled server, so that their costs per delivery compare.
                        rate = cfg["profile_rate"]
                        out["profile"] = await self.profile_python(server, publisher, rate, payloads[0])
                        out["cpu_profile"] = await self.profile_cpu(server, publisher, rate, payloads[0], size)
                finally:
                    await publisher.close()
            out["gc_fanout"] = await server.gc_snapshot()
        finally:
            if probe is not None:
                await probe.stop()
            await clients.stop()
            out["gc"] = await server.stop()
        return out

    async def official_check(self, server: Proc, clients: Clients, publisher: Publisher) -> dict[str, Any]:
        """One official @microsoft/signalr client beside the load client must get the same broadcasts."""
        from gateway.devtoken import mint_token

        node = shutil.which("node")
        if node is None or not (ROOT / "tests" / "node_modules" / "@microsoft" / "signalr").is_dir():
            return {"ok": False, "skipped": "node or tests/node_modules missing (make setup)"}
        token = mint_token(secret=JWT_SECRET, roles=["Admin"], subject="bench-official", ttl_seconds=3600)
        url = f"{server.extra['base_url']}/hubs/admin"
        process = await asyncio.create_subprocess_exec(
            *pinned(CLIENT_CORE, [node, str(OFFICIAL_CLIENT), url, token, "{}"]),
            cwd=OFFICIAL_CLIENT.parent,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        assert process.stdin is not None and process.stdout is not None
        seen: list[int] = []
        try:

            async def line() -> dict[str, Any]:
                assert process.stdout is not None
                return dict(json.loads(await asyncio.wait_for(process.stdout.readline(), 20)))

            while (first := await line()).get("state") != "connected":
                if first.get("state") == "startError":
                    return {"ok": False, "error": first.get("error")}
            process.stdin.write(b'{"id": 1, "cmd": "invoke", "method": "SubscribeToAlerts", "args": []}\n')
            await process.stdin.drain()
            while (await line()).get("id") != 1:
                pass
            await clients.stats(reset=True, reset_counts=True)
            answer = await publish_at(
                publisher, rate=10, seconds=1.0, target=lambda _n: ("group", "alerts"), size=100, first_seq=0
            )
            stats = await self._settle(clients, "s3", answer["published"])
            deadline = time.monotonic() + 5
            while len(seen) < answer["published"] and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    message = await asyncio.wait_for(line(), max(0.1, deadline - time.monotonic()))
                    if message.get("event") == "SystemAlert":
                        seen.append(int(message["args"][0]["bs"]))
            return {
                "published": answer["published"],
                "official_received": len(seen),
                "official_in_order": seen == sorted(seen),
                "loadclient_min_per_connection": stats["min_count"],
                "loadclient_shortfall": stats.get("shortfall", 0),
                "ok": len(seen) == answer["published"] and stats.get("shortfall", 0) == 0,
            }
        finally:
            with contextlib.suppress(Exception):
                process.stdin.write(b'{"id": 2, "cmd": "stop"}\n')
                await process.stdin.drain()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def profile_python(self, server: Proc, publisher: Publisher, rate: float, payload: int) -> dict[str, Any]:
        """py-spy (sampling, non-blocking, on the client core) while broadcasting at ``rate``."""
        seconds = self.profile["s3"]["profile_seconds"]
        pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if pyspy is None:
            return {"skipped": "py-spy not installed (bench extra)"}
        raw = self.workdir / "server-s3.pyspy.txt"
        argv = [pyspy, "record", "--pid", str(server.pid), "--duration", str(math.ceil(seconds) + 1)]
        argv += ["--rate", "250", "--nonblocking", "--format", "raw", "--output", str(raw)]
        spy = await start_profiler(argv)
        await publish_at(publisher, rate=rate, seconds=seconds, target=lambda _n: ("group", "alerts"), size=payload)
        _, err = await asyncio.to_thread(spy.communicate)
        if not raw.exists():
            return {"skipped": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
        return {"rate": rate, "seconds": seconds, **summarise_pyspy(raw)}

    async def profile_cpu(
        self, server: Proc, publisher: Publisher, rate: float, payload: int, members: int
    ) -> dict[str, Any]:
        """perf (CPU-clock samples of the whole process, kernel included) while broadcasting at ``rate``:
        the server's CPU per delivery by layer (kernel, interpreter, event loop, ...), which py-spy's
        Python frames cannot split."""
        perf = shutil.which("perf")
        if perf is None:
            return {"skipped": "perf not installed (Debian package linux-perf)"}
        seconds = self.profile["s3"]["profile_seconds"]
        raw = self.workdir / f"server-s3-{server.pid}.perf.data"
        argv = [perf, "record", "--quiet", "-e", "cpu-clock", "-c", str(PERF_PERIOD_NS), "-p", str(server.pid)]
        argv += ["-o", str(raw)]
        argv += ["--", "sleep", str(math.ceil(seconds) + 1)]
        record = await start_profiler(argv)
        before = cpu_seconds(server.pid), interrupt_seconds(SERVER_CORE)
        answer = await publish_at(
            publisher, rate=rate, seconds=seconds, target=lambda _n: ("group", "alerts"), size=payload
        )
        await asyncio.sleep(0.5)  # the last broadcast's pass
        used = cpu_seconds(server.pid) - before[0], interrupt_seconds(SERVER_CORE) - before[1]
        _, err = await asyncio.to_thread(record.communicate)
        if record.returncode != 0 or not raw.exists():
            return {"skipped": f"perf record failed: {err.decode(errors='replace')[-300:]}"}
        report = await asyncio.to_thread(
            subprocess.run,
            [perf, "report", "-i", str(raw), "--stdio", "-n", "--sort", "dso,sym", "-q", "--percent-limit", "0"],
            capture_output=True,
            check=False,
        )
        raw.unlink(missing_ok=True)
        if report.returncode != 0:
            return {"skipped": f"perf report failed: {report.stderr.decode(errors='replace')[-300:]}"}
        return {
            "rate": rate,
            "deliveries": answer["published"] * members,
            # The kernel's own accounting over the broadcasts (perf's window is longer but idle outside them).
            "accounted_cpu_seconds": used[0],
            "server_core_interrupt_seconds": used[1],
            **summarise_perf(report.stdout.decode(errors="replace")),
        }

    # -- S4 dashboard shape --------------------------------------------------------------------------

    async def s4(self, spec: ServerSpec) -> dict[str, Any]:
        cfg = self.profile["s4"]
        size = cfg["connections"]
        server = await self.start(spec)
        clients = await Clients.start(max(1, math.ceil(size / CONNS_PER_CLIENT)))
        conn = self.conn_spec(spec, server, "s4", group_of=GROUPS, personal=True)
        try:
            opened = await clients.connect(conn, size)
            publisher = await self.publisher(spec, server, "nats")
            next_index = size
            churned = {"opened": 0, "failed": 0, "closed": 0}
            group_every = max(1, round(cfg["user_rate"] / max(cfg["group_rate"], 1e-9)))

            def target(n: int) -> Target:
                if n % group_every == 0:
                    return ("group", GROUPS[(n // group_every) % len(GROUPS)])
                return ("user", (n * 7919) % next_index)

            async def churn() -> None:
                nonlocal next_index
                while True:
                    await asyncio.sleep(1.0)
                    closed = await clients.each("close", tag="s4", count=cfg["churn_per_s"] // len(clients.clients))
                    churned["closed"] += sum(answer["closed"] for answer in closed)
                    first, next_index = next_index, next_index + cfg["churn_per_s"]
                    result = await clients.connect(conn, cfg["churn_per_s"], first_index=first)
                    churned["opened"] += result["established"]
                    churned["failed"] += result["failed"]

            await clients.stats(reset=True)
            meter = self.meter(server, clients, spec)
            meter.start()
            churner = asyncio.get_running_loop().create_task(churn())
            try:
                sent = await publish_at(
                    publisher, rate=cfg["user_rate"] + cfg["group_rate"], seconds=cfg["seconds"], target=target,
                    size=cfg["payload_bytes"],
                )  # fmt: skip
            finally:
                churner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await churner
            await asyncio.sleep(0.5)
            cpu = meter.stop()
            stats = (await clients.stats(reset=True))["s4"]
            await publisher.close()
            return {
                "connections": opened,
                "published": sent,
                "deliveries_per_s": stats["received"] / cpu["wall_seconds"],
                **latency(stats["hist"]),
                "churn": churned,
                "closed_by_server": stats["closed_by_peer"],
                "client_errors": dict(clients.errors.most_common(5)),
                **cpu,
            }
        finally:
            await clients.stop()
            await server.stop()

    # -- S5 slow consumers ------------------------------------------------------------------------------

    async def s5(self, spec: ServerSpec, fraction: float, rate: float) -> dict[str, Any]:
        cfg = self.profile["s5"]
        size = cfg["connections"]
        laggards = max(1, round(size * fraction))
        server = await self.start(spec)
        clients = await Clients.start(1)
        try:
            await clients.connect(self.conn_spec(spec, server, "s5h", groups=["alerts"]), size - laggards)
            slow = self.conn_spec(spec, server, "s5l", groups=["alerts"], rcvbuf=cfg["laggard_rcvbuf"])
            await clients.connect(slow, laggards, first_index=size)
            publisher = await self.publisher(spec, server, "nats")

            async def phase(seconds: float) -> tuple[dict[str, Any], bool]:
                try:
                    await asyncio.wait_for(
                        publish_at(
                            publisher, rate=rate, seconds=seconds, target=lambda _n: ("group", "alerts"),
                            size=cfg["payload_bytes"],
                        ),
                        seconds + cfg["stall_grace_seconds"],
                    )  # fmt: skip
                    stalled = False
                except TimeoutError:
                    stalled = True
                return (await clients.stats(reset=True))["s5h"], stalled

            await clients.stats(reset=True)
            before, _ = await phase(cfg["before_seconds"])
            await clients.each("pause", tag="s5l")
            paused_at = time.monotonic()
            rss_start = server.rss()
            cut0 = slow_consumer_cuts(server) if spec.impl == "gateway" else 0
            timeline = []
            cut_after: float | None = None
            stalled_any = False
            merged: dict[int, int] = {}
            for _ in range(math.ceil(cfg["after_seconds"])):
                stats, stalled = await phase(1.0)
                stalled_any |= stalled
                merged = histogram.merge([merged, stats["hist"]])
                cuts = (slow_consumer_cuts(server) - cut0) if spec.impl == "gateway" else 0
                if cut_after is None and cuts >= laggards:
                    cut_after = time.monotonic() - paused_at
                timeline.append(
                    {
                        "t": time.monotonic() - paused_at,
                        "p99_ms": histogram.percentile(stats["hist"], 0.99),
                        "received": stats["received"],
                        "rss_kib": server.rss(),
                        "laggards_cut": cuts,
                        "stalled": stalled,
                    }
                )
                if stalled:
                    break
            await publisher.close()
            return {
                "fraction": fraction,
                "laggards": laggards,
                "rate": rate,
                "p99_before_ms": histogram.percentile(before["hist"], 0.99),
                "p99_after_ms": histogram.percentile(merged, 0.99),
                "p99_after_worst_second_ms": max((row["p99_ms"] or 0.0 for row in timeline), default=None),
                "rss_growth_kib": max((row["rss_kib"] for row in timeline), default=rss_start) - rss_start,
                "laggards_cut_after_s": cut_after,
                "backlog_per_laggard_kib": rate * cfg["payload_bytes"] * len(timeline) / 1024,
                "broadcast_stalled": stalled_any,
                "timeline": timeline,
            }
        finally:
            await clients.stop()
            await server.stop(sig=signal.SIGKILL)

    # -- S6 reconnect storm ------------------------------------------------------------------------------

    async def s6(self, spec: ServerSpec) -> dict[str, Any]:
        cfg = self.profile["s6"]
        size = cfg["connections"]
        first, second = await self.start(spec), await self.start(spec)
        hosts = [["127.0.0.1", first.extra["port"]], ["127.0.0.1", second.extra["port"]]]
        clients = await Clients.start(max(1, math.ceil(size / CONNS_PER_CLIENT)))
        publisher = await self.publisher(spec, first, "nats")
        reconnect = {
            "hosts": hosts,
            "base_seconds": cfg["backoff_base_seconds"],
            "max_seconds": 10.0,
            "timeout": cfg["attempt_timeout_seconds"],
        }
        try:
            half = size // 2
            for index, server in enumerate((first, second)):
                conn = self.conn_spec(spec, server, "s6", groups=["alerts"], reconnect=reconnect)
                await clients.connect(conn, half if index == 0 else size - half, first_index=index * half)
            stop = asyncio.Event()

            async def publish_forever() -> None:
                while not stop.is_set():
                    await publish_at(
                        publisher,
                        rate=cfg["publish_rate"],
                        seconds=1.0,
                        target=lambda _n: ("group", "alerts"),
                        size=100,
                    )

            publishing = asyncio.get_running_loop().create_task(publish_forever())
            await asyncio.sleep(cfg["steady_seconds"])
            killed_at = time.time_ns()
            await first.stop(sig=signal.SIGKILL)
            meter = Meter(second, self.nats, clients.clients)
            meter.start()
            deadline = time.monotonic() + cfg["max_recovery_seconds"]
            while time.monotonic() < deadline:
                stats = (await clients.stats())["s6"]
                if stats["open"] >= size:
                    break
                await asyncio.sleep(0.25)
            recovery = meter.stop()
            await asyncio.sleep(cfg["after_seconds"])
            stop.set()
            await publishing
            await asyncio.sleep(1.0)
            stats = (await clients.stats(want_times=True, want_after=True))["s6"]
            times = sorted(t for t in stats["ready_times"] if t > killed_at)
            dropped = half
            survivors = size - dropped
            need99 = max(0, math.ceil(0.99 * size) - survivors)
            sent = sorted(publisher.sent_times)
            lost = duplicated = 0
            clients_losing = 0
            for subscribed_at, count_after in stats["after"]:
                expected = len(sent) - bisect.bisect_left(sent, subscribed_at)
                lost += max(0, expected - count_after)
                duplicated += max(0, count_after - expected)
                clients_losing += expected > count_after
            peak = 0
            for n, t in enumerate(times):
                peak = max(peak, n + 1 - bisect.bisect_left(times, t - 1_000_000_000))
            return {
                "connections": size,
                "dropped": dropped,
                "back": len(times),
                "open_at_end": stats["open"],
                "seconds_to_99pct": (times[need99 - 1] - killed_at) / 1e9 if 0 < need99 <= len(times) else None,
                "seconds_to_all": (times[dropped - 1] - killed_at) / 1e9 if len(times) >= dropped else None,
                "peak_handshakes_per_s": peak,
                "reconnect_attempts": stats["reconnects"],
                "published": len(sent),
                "back_pct": 100.0 * len(times) / max(dropped, 1),
                "recovery_cpu": recovery,
                "recovery_limit_seconds": cfg["max_recovery_seconds"],
                "client_errors": dict(clients.errors.most_common(5)),
                "messages_lost_after_resubscribe": lost,
                "clients_with_loss": clients_losing,
                "duplicates": duplicated,
            }
        finally:
            await publisher.close()
            await clients.stop()
            await second.stop()
            await first.stop(sig=signal.SIGKILL)


def slow_consumer_cuts(server: Proc) -> int:
    """``realtime_connections_closed_total{reason="slow_consumer"}`` of a gateway."""
    try:
        with urllib.request.urlopen(server.extra["base_url"] + "/metrics", timeout=2) as response:  # noqa: S310
            text = response.read().decode()
    except OSError:
        return 0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("realtime_connections_closed_total{") and 'reason="slow_consumer"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


IDLE_FRAMES: Final = ("select", "poll", "run_forever")
# perf takes one sample per millisecond of the server's CPU time (the cpu-clock software event: this
# machine's VM has no hardware counters), so a sample count is a CPU time.
PERF_PERIOD_NS: Final = 1_000_000


async def start_profiler(argv: list[str]) -> subprocess.Popen[bytes]:
    """A sampling profiler on the client core, given half a second to attach before the broadcasts; its
    caller waits for it in a thread (``communicate``)."""
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - started here, waited for in a thread
        pinned(CLIENT_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    await asyncio.sleep(0.5)
    return process


def summarise_pyspy(raw: Path, top: int = 15) -> dict[str, Any]:
    """Leaf (self) and inclusive shares of the busy samples in py-spy's collapsed stacks.

    Samples whose innermost frame is the event loop waiting (``select``/``poll``) are counted as idle.
    """
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        if frames[-1].split(" (", 1)[0].endswith(IDLE_FRAMES):
            idle += count
            continue
        total += count
        leaf[_short(frames[-1])] += count
        for name in {_short(frame) for frame in frames}:
            inclusive[name] += count
    return {
        "samples": total,
        "idle_samples": idle,
        "self": [[name, 100 * count / max(total, 1)] for name, count in leaf.most_common(top)],
        "inclusive": [[name, 100 * count / max(total, 1)] for name, count in inclusive.most_common(top)],
    }


def summarise_perf(text: str, top: int = 40) -> dict[str, Any]:
    """CPU seconds by layer (:func:`perf_layer`) and by symbol, from ``perf report --stdio -n --sort
    dso,sym -q`` lines (``  12.34%  617  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault``); one sample
    is :data:`PERF_PERIOD_NS` of CPU time."""
    layers: Counter[str] = Counter()
    symbols: Counter[str] = Counter()
    for line in text.splitlines():
        fields = line.split(None, 4)
        if len(fields) < 5 or not fields[0].endswith("%") or not fields[1].isdigit():
            continue
        _, count, dso, _, symbol = fields
        layers[perf_layer(dso)] += int(count)
        symbols[f"{symbol.strip()} ({dso})"] += int(count)
    seconds = PERF_PERIOD_NS / 1e9
    return {
        "cpu_seconds": sum(layers.values()) * seconds,
        "layers": [[name, count * seconds] for name, count in layers.most_common()],
        "symbols": [[name, count * seconds] for name, count in symbols.most_common(top)],
    }


def perf_layer(dso: str) -> str:
    """The layer a shared object belongs to, as the benchmarks name it."""
    if dso.startswith("[kernel"):
        return "kernel (sockets, TCP, epoll)"
    if dso.startswith(("libpython", "python")):
        return "CPython interpreter"
    if dso.startswith("loop.cpython"):
        return "uvloop / libuv"
    if dso.startswith(("libc.", "libc-", "libm.", "ld-linux")):
        return "C library"
    return "other extensions (aiohttp, orjson, nats ...)"


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``: lines differ between samples."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})" if path else name
