"""``python -m bench.run --profile smoke|full``: run the scenarios, write results JSON, plots and BENCHMARKS.md.

``smoke`` runs every scenario with tiny numbers in about a minute and checks that the harness
produced sane, non-empty results (exit status 1 otherwise); ``full`` is the measurement BENCHMARKS.md reports.
``--only S3,S5`` and ``--servers ours,...`` narrow a run (the report then says it is partial).
``--baseline-rev REV`` also runs our S3 jobs against the gateway as it was at git revision REV (``ours@<commit>``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Final

from bench import collector_backlog, report, soak
from bench.procs import CLIENT_CORE, ROOT, can_pin, pin_self
from bench.scenarios import Bench, ServerSpec
from scripts.processes import nats_server_binary

PYTHON_SERVERS: Final = [
    "ours/asyncio",
    "ours",
    "aiohttp-send_str/asyncio",
    "aiohttp-send_str/uvloop",
    "aiohttp-prebuilt/asyncio",
    "aiohttp-prebuilt/uvloop",
    "socketio/asyncio",
    "socketio/uvloop",
]
LADDER: Final = [1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000]

PROFILES: Final[dict[str, dict[str, Any]]] = {
    "smoke": {
        "s1": {
            "servers": ["ours", "aiohttp-send_str/asyncio", "socketio/asyncio"],
            "connections": [1, 5],
            "seconds": 0.5,
            "runs": 1,
            "payload_bytes": 100,
        },
        "s2": {
            "servers": ["ours/asyncio", "aiohttp-send_str/asyncio"],
            "levels": [20, 50],
            "hold_seconds": 0.5,
            "concurrency": 50,
            "timeout": 10.0,
        },
        "s3": {
            "jobs": [
                {"server": "ours", "size": 20, "paths": ["nats", "rest"], "payloads": [100]},
                {"server": "ours/core-nats", "size": 20, "paths": ["nats"], "payloads": [100]},
                {"server": "aiohttp-prebuilt/asyncio", "size": 20, "paths": ["ws"], "payloads": [100]},
                {"server": "socketio/asyncio", "size": 20, "paths": ["ws"], "payloads": [100]},
                {"server": "nats/go", "size": 10, "paths": ["nats"], "payloads": [100]},
            ],
            "rates": [5, 20],
            "windows": 1,
            "window_seconds": 0.5,
            "settle_max_seconds": 2.0,
            "max_deliveries_per_s": 10_000_000,
            "reference_rate": 5,
            "official_check": True,
            "profile_size": 20,
            "profile_rate": 20,
            "profile_seconds": 0.5,
            "probe_sizes": [20],
            "probe_connections": 2,
            "probe_interval_seconds": 0.125,
        },
        "s4": {
            "servers": ["ours/asyncio", "socketio/asyncio"],
            "connections": 40,
            "user_rate": 50,
            "group_rate": 5,
            "churn_per_s": 4,
            "seconds": 2.0,
            "payload_bytes": 100,
        },
        "s5": {
            "servers": ["ours/asyncio", "aiohttp-prebuilt/asyncio"],
            "connections": 20,
            "fractions": [0.1],
            "before_seconds": 1.0,
            "after_seconds": 2.0,
            "laggard_rcvbuf": 4096,
            "payload_bytes": 1024,
            "stall_grace_seconds": 2.0,
            "default_rate": 20,
        },
        "s6": {
            "servers": ["ours/asyncio"],
            "connections": 40,
            "publish_rate": 20,
            "steady_seconds": 1.0,
            "after_seconds": 0.5,
            "max_recovery_seconds": 15.0,
            "backoff_base_seconds": 0.3,
            "attempt_timeout_seconds": 10.0,
        },
        "s7": {"events": 3000, "users": 600, "batch": 1000, "drain_timeout": 60.0, "profile_seconds": 1.0},
    },
    "full": {
        "s1": {"servers": PYTHON_SERVERS, "connections": [1, 100], "seconds": 2.0, "runs": 3, "payload_bytes": 100},
        "s2": {
            "servers": ["ours/asyncio", "ours", "aiohttp-send_str/uvloop", "socketio/uvloop"],
            # 19,000, not 20,000: the open-file limit of this machine is 20,000 per process (hard limit).
            "levels": [1000, 5000, 10000, 19000],
            "hold_seconds": 10.0,
            "concurrency": 200,
        },
        "s3": {
            "jobs": [
                {"server": "ours", "size": 1000, "paths": ["nats"], "payloads": [100]},
                {"server": "ours", "size": 5000, "paths": ["nats", "rest"], "payloads": [100, 1024]},
                {"server": "ours", "size": 10000, "paths": ["nats"], "payloads": [100]},
                {"server": "ours/asyncio", "size": 5000, "paths": ["nats", "rest"], "payloads": [100]},
                # Fan-out through core NATS subscriptions instead of the REALTIME_FANOUT stream: what the stream costs.
                {"server": "ours/core-nats", "size": 5000, "paths": ["nats", "rest"], "payloads": [100]},
                {"server": "aiohttp-send_str/asyncio", "size": 5000, "paths": ["ws"], "payloads": [100]},
                {"server": "aiohttp-send_str/uvloop", "size": 5000, "paths": ["ws"], "payloads": [100]},
                {"server": "aiohttp-prebuilt/asyncio", "size": 5000, "paths": ["ws"], "payloads": [100]},
                {"server": "aiohttp-prebuilt/uvloop", "size": 1000, "paths": ["ws"], "payloads": [100]},
                {"server": "aiohttp-prebuilt/uvloop", "size": 5000, "paths": ["ws"], "payloads": [100, 1024]},
                {"server": "aiohttp-prebuilt/uvloop", "size": 10000, "paths": ["ws"], "payloads": [100]},
                {"server": "socketio/asyncio", "size": 5000, "paths": ["ws"], "payloads": [100]},
                {"server": "socketio/uvloop", "size": 1000, "paths": ["ws"], "payloads": [100]},
                {"server": "socketio/uvloop", "size": 5000, "paths": ["ws"], "payloads": [100]},
                {"server": "nats/go", "size": 1000, "paths": ["nats"], "payloads": [100]},
            ],
            "rates": LADDER,
            "windows": 3,
            "window_seconds": 1.5,
            "settle_max_seconds": 4.0,
            "max_deliveries_per_s": 2_000_000,
            "reference_rate": 10,
            "official_check": True,
            "profile_size": 5000,
            "profile_rate": 20,
            "profile_seconds": 5.0,
            # The fair-loop figure: invocations of other connections answered while 10,000 are fed.
            # Four connections, one round trip each 125 ms (under the gateway's 10 invocations/s each).
            "probe_sizes": [10000],
            "probe_connections": 4,
            "probe_interval_seconds": 0.125,
        },
        "s4": {
            "servers": ["ours", "aiohttp-prebuilt/uvloop", "socketio/uvloop"],
            "connections": 10000,
            "user_rate": 500,
            "group_rate": 2,
            "churn_per_s": 100,
            "seconds": 20.0,
            "payload_bytes": 100,
        },
        "s5": {
            "servers": ["ours", "aiohttp-send_str/uvloop", "aiohttp-prebuilt/uvloop", "socketio/uvloop"],
            "connections": 1000,
            "fractions": [0.01, 0.05, 0.10],
            "before_seconds": 4.0,
            "after_seconds": 20.0,
            "laggard_rcvbuf": 4096,
            # 16 KiB, not 1 KiB: at half the S3 ceiling a laggard must fall more than our 1 MiB outbound
            # limit behind within the run, or nothing is ever cut (the report shows the backlog reached).
            "payload_bytes": 16384,
            "stall_grace_seconds": 3.0,
            "default_rate": 50,
        },
        "s6": {
            "servers": ["ours"],
            "connections": 5000,
            # 1 broadcast/s = 5,000 deliveries/s: well under the S3 ceiling, so the storm, not the
            # fan-out, is what the surviving replica struggles with.
            "publish_rate": 1,
            "steady_seconds": 3.0,
            "after_seconds": 2.0,
            "max_recovery_seconds": 90.0,
            "backoff_base_seconds": 1.0,
            "attempt_timeout_seconds": 30.0,
        },
        "s7": {"events": 500_000, "users": 100_000, "batch": 1000, "drain_timeout": 600.0, "profile_seconds": 10.0},
        # The soak (bench/soak.py); --soak-minutes changes its length. The smoke profile has none: its short
        # version is tests/bench/test_soak.py.
        "s8": {**soak.DEFAULTS},
    },
}


FULL_S3_JOBS: Final = list(PROFILES["full"]["s3"]["jobs"])


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("aiohttp", "nats-py", "orjson", "uvloop", "python-socketio", "python-engineio", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        nats_version = subprocess.run(  # noqa: S603
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        nats_version = None
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S603
        if node
        else None
    )
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0]
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory": meminfo.split(":", 1)[1].strip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "nats_server": nats_version,
        "node": node_version,
        "pinned": can_pin(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "load_client_receive_loop": "compiled" if importlib.util.find_spec("bench.fastrecv") else "python",
    }


async def machine_busy_pct(seconds: float) -> float:
    """How busy all cores were (percent of all of them) over ``seconds`` before the run, from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]  # no guest
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    await asyncio.sleep(seconds)
    busy1, total1 = sample()
    return 100.0 * (busy1 - busy0) / max(total1 - total0, 1)


def _wanted(label: str, servers: set[str] | None) -> bool:
    return servers is None or label in servers


def baseline_jobs(jobs: list[dict[str, Any]], commit: str) -> list[dict[str, Any]]:
    """A copy of each S3 job of ``ours`` (as shipped) for ``ours@<commit>``, same sizes, paths and payloads."""
    return [{**job, "server": f"ours@{commit}"} for job in jobs if job["server"] == "ours"]


async def run(
    profile_name: str,
    only: set[str] | None,
    servers: set[str] | None,
    s3_from: dict[str, Any] | None = None,
    baseline_rev: str | None = None,
) -> dict[str, Any]:
    profile = PROFILES[profile_name]
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_at_start = os.getloadavg()
    busy_before = await machine_busy_pct(2.0)
    pin_self(CLIENT_CORE)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    results: dict[str, Any] = {f"S{n}": {} for n in range(1, 8)}
    if "s8" in profile:
        results["S8"] = {}
    errors: list[str] = []
    started = time.monotonic()
    async with Bench(profile, workdir) as bench:

        async def job(scenario: str, label: str, key: str, coro: Any) -> None:
            bench.log(f"{scenario} {label} {key}".strip())
            try:
                results[scenario].setdefault(label, {})[key] = await coro
            except Exception as error:
                text = f"{scenario} {label} {key}: {type(error).__name__}: {error}"
                bench.log(text + "\n" + traceback.format_exc())
                errors.append(text)
                results[scenario].setdefault(label, {})[key] = {"error": text}

        def want(scenario: str) -> bool:
            return only is None or scenario in only

        if want("S1"):
            for label in profile["s1"]["servers"]:
                if _wanted(label, servers):
                    await job("S1", label, "echo", bench.s1(ServerSpec.parse(label)))
        if want("S2"):
            for label in profile["s2"]["servers"]:
                if _wanted(label, servers):
                    await job("S2", label, "density", bench.s2(ServerSpec.parse(label)))
        if want("S3"):
            s3_jobs = list(profile["s3"]["jobs"])
            if baseline_rev:
                commit = bench.add_revision(baseline_rev)
                bench.log(f"baseline: {baseline_rev} = {commit}, unpacked in {bench.revisions[commit]}")
                wanted = [job for job in s3_jobs if _wanted(job["server"], servers)]
                s3_jobs += baseline_jobs(wanted, commit)
                servers = None if servers is None else servers | {f"ours@{commit}"}
            for spec in s3_jobs:
                if _wanted(spec["server"], servers):
                    server = ServerSpec.parse(spec["server"])
                    call = bench.s3(server, spec["size"], paths=spec["paths"], payloads=spec["payloads"])
                    await job("S3", spec["server"], str(spec["size"]), call)
        if want("S4"):
            for label in profile["s4"]["servers"]:
                if _wanted(label, servers):
                    await job("S4", label, "dashboard", bench.s4(ServerSpec.parse(label)))
        if want("S5"):
            for label in profile["s5"]["servers"]:
                if not _wanted(label, servers):
                    continue
                earlier = (s3_from or {}).get(label, {})
                rate = s5_rate(results["S3"].get(label) or earlier, profile)
                for fraction in profile["s5"]["fractions"]:
                    await job("S5", label, f"{fraction:g}", bench.s5(ServerSpec.parse(label), fraction, rate))
        if want("S6"):
            for label in profile["s6"]["servers"]:
                if _wanted(label, servers):
                    await job("S6", label, "storm", bench.s6(ServerSpec.parse(label)))
        if want("S7") and servers is None:
            await job("S7", "collector", "backlog", collector_backlog.s7(workdir, profile["s7"], bench.log))
        if want("S8") and "s8" in profile and _wanted("ours", servers):
            await job("S8", "ours", "soak", soak.s8(workdir, profile["s8"], bench.log))
        notes = bench.notes
        revisions = sorted(bench.revisions)
    return {
        "profile": profile_name,
        "partial": only is not None or servers is not None or len(profile["s3"]["jobs"]) < len(FULL_S3_JOBS),
        "started_at": started_at,
        "duration_seconds": time.monotonic() - started,
        "machine": {**machine(), "load_average_at_start": load_at_start, "cpu_busy_before_pct": busy_before},
        "config": profile,
        "results": results,
        "errors": errors,
        "notes": notes,
        "baseline": {"rev": baseline_rev, "commits": revisions} if baseline_rev else None,
        "workdir": str(workdir),
    }


def s5_rate(s3: dict[str, Any], profile: dict[str, Any]) -> float:
    """Half the S3 ceiling of this server, as broadcasts/s to the S5 group."""
    size = profile["s5"]["connections"]
    ladders = [path for entry in s3.values() for path in entry.get("paths", {}).values()]
    if not ladders:  # S3 did not run for this server
        return float(profile["s5"]["default_rate"])
    best = max(ladder.get("ceiling_deliveries_per_s", 0.0) for ladder in ladders)
    # No rate passed (not even 1 broadcast/s): the slowest rate S3 tried.
    return max(1.0, min(1000.0, round(0.5 * best / size, 1)))


def check_smoke(data: dict[str, Any]) -> list[str]:
    """Problems that mean the harness is broken (not that a server is slow)."""
    problems = list(data["errors"])
    results = data["results"]

    def need(condition: bool, what: str) -> None:
        if not condition:
            problems.append(what)

    for label, entry in results["S1"].items():
        for count, figures in entry["echo"].items():
            if count != "gc":
                need(figures["round_trips_per_s"] > 0, f"S1 {label} {count}: no round trips")
                need(not figures["failed"], f"S1 {label} {count}: failed connections")
    for label, entry in results["S2"].items():
        levels = entry["density"]["levels"]
        need(bool(levels) and all(level["open"] == level["target"] for level in levels), f"S2 {label}: not all open")
        need(all(level["rss_kib"] > 0 for level in levels), f"S2 {label}: no RSS")
    for label, sizes in results["S3"].items():
        for size, entry in sizes.items():
            need(bool(entry.get("paths")), f"S3 {label} {size}: no results")
            for path, ladder in entry.get("paths", {}).items():
                first = ladder["steps"][0] if ladder["steps"] else {}
                need(first.get("deliveries_per_s", 0) > 0, f"S3 {label} {size} {path}: no deliveries")
                need(first.get("shortfall", 1) == 0, f"S3 {label} {size} {path}: messages missed at the lowest rate")
                need(first.get("p99_ms") is not None, f"S3 {label} {size} {path}: no latency")
            official = entry.get("official")
            if official is not None and "skipped" not in official:
                need(bool(official.get("ok")), f"S3 {label}: official client check failed: {official}")
    for label, entry in results["S4"].items():
        need(entry["dashboard"].get("deliveries_per_s", 0) > 0, f"S4 {label}: no deliveries")
    for label, fractions in results["S5"].items():
        for fraction, entry in fractions.items():
            need(entry.get("p99_before_ms") is not None, f"S5 {label} {fraction}: no latency before")
    for label, entry in results["S6"].items():
        storm = entry["storm"]
        need(storm.get("back", 0) >= storm.get("dropped", 1), f"S6 {label}: not every client came back: {storm}")
        need(storm.get("messages_lost_after_resubscribe", 1) == 0, f"S6 {label}: messages lost: {storm}")
    problems += collector_backlog.smoke_problems(results["S7"])
    for scenario in ("S1", "S2", "S3", "S4", "S5", "S6", "S7"):
        need(bool(results[scenario]), f"{scenario}: no results")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--only", default=None, help="comma-separated scenarios (S1..S8)")
    parser.add_argument("--servers", default=None, help="comma-separated server labels, e.g. ours,ours/asyncio")
    parser.add_argument("--s3-from", default=None, help="results JSON whose S3 ceilings set the S5 rates")
    parser.add_argument("--sizes", default=None, help="comma-separated S3 group sizes to keep")
    parser.add_argument(
        "--baseline-rev",
        default=None,
        help="git revision whose gateway S3 also runs (same sizes as ours), reported as ours@<commit>",
    )
    parser.add_argument("--soak-minutes", type=float, default=None, help="length of the S8 soak (default 30)")
    parser.add_argument("--out", default=None, help="results directory (default bench/results, smoke: a temp dir)")
    parser.add_argument("--markdown", default=None, help="BENCHMARKS.md to write (default: ROOT for full runs)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    servers = set(args.servers.split(",")) if args.servers else None

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so every scenario's finally block stops its processes

    signal.signal(signal.SIGTERM, interrupt)
    if args.sizes:
        keep = {int(size) for size in args.sizes.split(",")}
        s3 = PROFILES[args.profile]["s3"]
        s3["jobs"] = [job for job in s3["jobs"] if job["size"] in keep]
    if args.soak_minutes is not None and "s8" in PROFILES[args.profile]:
        PROFILES[args.profile]["s8"]["minutes"] = args.soak_minutes
    s3_from = json.loads(Path(args.s3_from).read_text())["results"]["S3"] if args.s3_from else None
    data = asyncio.run(run(args.profile, only, servers, s3_from, args.baseline_rev))
    if args.out:
        out = Path(args.out)
    elif args.profile == "smoke":
        out = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    else:
        out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    json_path = out / f"{stamp}-{args.profile}.json"
    json_path.write_text(json.dumps(data, indent=1))
    markdown = Path(args.markdown) if args.markdown else (ROOT / "BENCHMARKS.md" if args.profile == "full" else None)
    if markdown is not None:
        report.write(data, json_path, markdown, plots_dir=out)
        print(f"wrote {markdown}", file=sys.stderr)
    print(f"wrote {json_path}", file=sys.stderr)
    print(report.console_summary(data))
    if args.profile == "smoke":
        problems = check_smoke(data)
        if problems:
            print("SMOKE FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("smoke ok", file=sys.stderr)
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
