"""The bench's server labels: ours as shipped, its variants, a baseline revision, the peers; what each starts with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.procs import ROOT, gateway_loop_env
from bench.run import baseline_jobs
from bench.scenarios import ServerSpec


@pytest.mark.parametrize(
    ("label", "loop", "env", "rev"),
    [
        ("ours", "uvloop", {}, ""),
        ("ours/asyncio", "asyncio", {}, ""),
        ("ours/core-nats", "uvloop", {"REALTIME_FANOUT_STREAM": "false"}, ""),
        ("ours@16e920c", "uvloop", {}, "16e920c"),
    ],
)
def test_labels_of_ours_round_trip(label: str, loop: str, env: dict[str, str], rev: str) -> None:
    spec = ServerSpec.parse(label)
    assert (spec.impl, spec.loop, spec.gateway_env, spec.rev) == ("gateway", loop, env, rev)
    assert spec.label == label


def test_the_old_uvloop_label_names_the_headline() -> None:
    assert ServerSpec.parse("ours/uvloop").label == "ours"


@pytest.mark.parametrize("label", ["aiohttp-prebuilt/uvloop", "aiohttp-send_str/asyncio", "socketio/uvloop", "nats/go"])
def test_peer_labels_round_trip(label: str) -> None:
    assert ServerSpec.parse(label).label == label


def test_an_unknown_variant_of_ours_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        ServerSpec.parse("ours/turbo")


def test_the_loop_is_a_setting_where_the_checkout_has_it_and_a_site_hook_policy_before(tmp_path: Path) -> None:
    assert gateway_loop_env(ROOT, "uvloop") == {"REALTIME_EVENT_LOOP": "uvloop"}
    assert gateway_loop_env(ROOT, "asyncio") == {"REALTIME_EVENT_LOOP": "asyncio"}
    assert gateway_loop_env(tmp_path, "uvloop") == {"BENCH_UVLOOP_POLICY": "1"}
    assert gateway_loop_env(tmp_path, "asyncio") == {}


def test_a_baseline_repeats_the_jobs_of_ours_only() -> None:
    jobs = [
        {"server": "ours", "size": 5000, "paths": ["nats", "rest"], "payloads": [100]},
        {"server": "ours/core-nats", "size": 5000, "paths": ["nats"], "payloads": [100]},
        {"server": "aiohttp-prebuilt/uvloop", "size": 5000, "paths": ["ws"], "payloads": [100]},
    ]
    assert baseline_jobs(jobs, "16e920c") == [
        {"server": "ours@16e920c", "size": 5000, "paths": ["nats", "rest"], "payloads": [100]}
    ]
