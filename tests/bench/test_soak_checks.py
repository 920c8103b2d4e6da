"""The S8 soak's own checks (bench/soak.py), on made-up input: what counts as lost, duplicated, grown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import soak


def numbered(conn: soak.SoakConn, path: str, *seqs: int) -> None:
    for seq in seqs:
        conn.on_message(
            b'{"type":1,"target":"SystemAlert","arguments":[{"data":{"sp":"%s","sq":%d}}]}\x1e' % (path.encode(), seq)
        )


def test_a_gap_is_a_loss_and_a_step_back_a_duplicate(tmp_path: Path) -> None:
    async def run() -> soak.Life:
        conn = soak.SoakConn(soak.Soak({}, tmp_path, print), "healthy", "u")
        numbered(conn, "r", 3, 4, 6, 6, 5, 7)
        numbered(conn, "n", 0, 1)
        return conn.life

    life = asyncio.run(run())
    assert (life.missing, life.gaps, life.duplicates, life.received) == (1, 1, 2, 8)
    assert life.first == {"r": 3, "n": 0} and life.last == {"r": 7, "n": 1}


def test_a_life_must_cover_what_was_sent_while_it_was_subscribed(tmp_path: Path) -> None:
    runner = soak.Soak({"settle_seconds": 2.0}, tmp_path, print)
    runner.sent = {"r": [10.0, 11.0, 12.0, 13.0], "n": [10.5, 11.5]}
    whole = soak.Life("healthy", subscribed_at=9.0, first={"r": 0, "n": 0}, last={"r": 3, "n": 1})
    late_start = soak.Life("healthy", subscribed_at=10.2, first={"r": 2, "n": 0}, last={"r": 3, "n": 1})
    churned = soak.Life("healthy", subscribed_at=9.0, ended_at=13.0, first={"r": 0, "n": 0}, last={"r": 1, "n": 0})
    runner.lives = [whole, churned]
    assert runner.check_lives(end=14.0) == {"lost": 0, "duplicates": 0, "lives_short": 0}
    runner.lives = [late_start]  # broadcast r1 (sent at 11.0, after it subscribed) never came
    assert runner.check_lives(end=14.0) == {"lost": 1, "duplicates": 0, "lives_short": 1}


def test_rss_growth_compares_medians_after_the_warm_up() -> None:
    samples = [[float(t), 50.0 if t < 10 else 100.0 + (t >= 40) * 2, 0] for t in range(0, 60, 5)]
    growth = soak.rss_growth(samples, warmup_seconds=10.0, window=2)
    assert (growth["start_mib"], growth["end_mib"], growth["growth_mib"], growth["growth_pct"]) == (100, 102, 2, 2)


def test_closed_by_reason_and_log_scan() -> None:
    text = 'realtime_connections_closed_total{reason="slow_consumer"} 3.0\nrealtime_connections{x="y"} 1.0\n'
    assert soak.closed_by_reason(text) == {"slow_consumer": 3.0}
    log = "2026 WARNING gateway: fine\n2026 ERROR aiohttp: boom\nTraceback (most recent call last):\n"
    scanned = soak.scan_log(log)
    assert (scanned["tracebacks"], scanned["error_lines"], scanned["lines"]) == (1, 1, 3)
