"""perf's report lines become CPU seconds by layer and by symbol (bench/scenarios.py, S3's CPU profile)."""

from __future__ import annotations

import pytest

from bench.report import cpu_by_layer
from bench.scenarios import perf_layer, summarise_perf

REPORT = """
# comment lines and blank lines are not samples

    40.00%           400  [kernel.kallsyms]                  [k] tcp_sendmsg_locked
    25.00%           250  libpython3.11.so.1.0               [.] _PyEval_EvalFrameDefault
    10.00%           100  [kernel.kallsyms]                  [k] do_syscall_64
    10.00%           100  loop.cpython-311-x86_64-linux-gnu.so  [.] __pyx_f_6uvloop_4loop_UVStream_write
     5.00%            50  libc.so.6                          [.] __memmove_avx_unaligned_erms
     5.00%            50  _websocket.cpython-311-x86_64-linux-gnu.so  [.] websocket_mask
     5.00%            50  python3.11                         [.] main
"""


def test_samples_become_cpu_seconds_by_layer_and_symbol() -> None:
    summary = summarise_perf(REPORT, top=2)
    assert summary["cpu_seconds"] == pytest.approx(1.0)
    layers = dict(summary["layers"])
    assert layers == pytest.approx(
        {
            "kernel (sockets, TCP, epoll)": 0.5,
            "CPython interpreter": 0.3,
            "uvloop / libuv": 0.1,
            "C library": 0.05,
            "other extensions (aiohttp, orjson, nats ...)": 0.05,
        }
    )
    assert [name for name, _ in summary["layers"]][:2] == ["kernel (sockets, TCP, epoll)", "CPython interpreter"]
    assert dict(summary["symbols"]) == pytest.approx(
        {"tcp_sendmsg_locked ([kernel.kallsyms])": 0.4, "_PyEval_EvalFrameDefault (libpython3.11.so.1.0)": 0.25}
    )


@pytest.mark.parametrize(
    ("dso", "layer"),
    [
        ("[kernel.kallsyms]", "kernel (sockets, TCP, epoll)"),
        ("[kernel.vmlinux]", "kernel (sockets, TCP, epoll)"),
        ("libpython3.11.so.1.0", "CPython interpreter"),
        ("loop.cpython-311-x86_64-linux-gnu.so", "uvloop / libuv"),
        ("ld-linux-x86-64.so.2", "C library"),
        ("orjson.cpython-311-x86_64-linux-gnu.so", "other extensions (aiohttp, orjson, nats ...)"),
    ],
)
def test_shared_objects_map_to_layers(dso: str, layer: str) -> None:
    assert perf_layer(dso) == layer


def test_the_report_gives_microseconds_per_delivery() -> None:
    profile = {"rate": 20, "deliveries": 100_000, **summarise_perf(REPORT)}
    lines = cpu_by_layer("ours", "5000", profile)
    assert "1.00 CPU-s for 100,000 deliveries, 10.00 µs per delivery" in lines[0]
    assert "| kernel (sockets, TCP, epoll) | 5.00 | 50% |" in lines
    assert "| `tcp_sendmsg_locked ([kernel.kallsyms])` | 4.00 |" in lines


def test_the_report_sets_the_kernels_accounting_beside_perf() -> None:
    profile = {"rate": 20, "deliveries": 100_000, **summarise_perf(REPORT)}
    profile |= {"accounted_cpu_seconds": 0.8, "server_core_interrupt_seconds": 0.15}
    heading = cpu_by_layer("ours", "5000", profile)[0]
    assert "0.80 CPU-s charged to the process and 0.15 s of interrupt time" in heading


def test_a_skipped_profile_says_why() -> None:
    assert cpu_by_layer("ours", "5000", {"skipped": "perf not installed"}) == [
        "perf profile (ours) skipped: perf not installed",
        "",
    ]
