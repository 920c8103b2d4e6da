"""Which event loop a process runs on: auto, explicit asyncio, explicit uvloop, uvloop missing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import pytest
import uvloop

from shared.event_loop import EventLoopUnavailable, choose_event_loop, choose_event_loop_or_exit, running_event_loop
from stats_collector.__main__ import main as collector_main
from stats_collector.simulate import main as simulate_main


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import uvloop`` raises ImportError, as where it is not installed."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


def run_and_name(new_loop: object) -> tuple[str, str]:
    async def name() -> tuple[str, str]:
        return running_event_loop()

    with asyncio.Runner(loop_factory=new_loop) as runner:  # type: ignore[arg-type]
        return runner.run(name())


def test_auto_takes_uvloop_when_importable() -> None:
    choice = choose_event_loop("auto")
    assert (choice.name, choice.version) == ("uvloop", uvloop.__version__)
    assert choice.description == f"uvloop {uvloop.__version__}"
    assert run_and_name(choice.new_loop) == ("uvloop", uvloop.__version__)


@pytest.mark.usefixtures("without_uvloop")
def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    choice = choose_event_loop("auto")
    assert choice.name == "asyncio"
    assert run_and_name(choice.new_loop)[0] == "asyncio"


def test_explicit_asyncio_even_with_uvloop_installed() -> None:
    choice = choose_event_loop("asyncio")
    assert choice.name == "asyncio"
    assert run_and_name(choice.new_loop)[0] == "asyncio"


def test_explicit_uvloop() -> None:
    assert choose_event_loop("uvloop").name == "uvloop"


@pytest.mark.usefixtures("without_uvloop")
def test_explicit_uvloop_missing_is_an_error_naming_the_way_out() -> None:
    with pytest.raises(EventLoopUnavailable) as raised:
        choose_event_loop("uvloop")
    assert raised.value.requested == "uvloop"
    assert "REALTIME_EVENT_LOOP=asyncio" in str(raised.value)


@pytest.mark.usefixtures("without_uvloop")
def test_explicit_uvloop_missing_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        choose_event_loop_or_exit("uvloop", prog="python -m gateway")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m gateway: error: event loop 'uvloop' is not available")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.usefixtures("without_uvloop")
@pytest.mark.parametrize(
    ("main", "argv", "prog"),
    [
        (collector_main, [], "python -m stats_collector"),
        (collector_main, ["seed", "--total-users", "1"], "python -m stats_collector seed"),
        (simulate_main, [], "python -m stats_collector.simulate"),
    ],
)
def test_every_collector_command_exits_2_when_uvloop_is_asked_for_and_missing(
    capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int], argv: list[str], prog: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--event-loop", "uvloop"])
    assert exited.value.code == 2
    assert f"{prog}: error: event loop 'uvloop'" in capsys.readouterr().err


def test_an_unknown_event_loop_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REALTIME_EVENT_LOOP", "trio")
    with pytest.raises(SystemExit) as exited:
        collector_main([])
    assert exited.value.code == 2
    assert "REALTIME_EVENT_LOOP: must be one of auto, uvloop, asyncio" in capsys.readouterr().err
