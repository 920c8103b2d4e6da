"""The README's configuration tables name every flag and variable the processes read."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import OPTIONS as GATEWAY_OPTIONS
from shared.config import Option
from stats_collector.settings import OPTIONS as COLLECTOR_OPTIONS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("option", [*GATEWAY_OPTIONS, *COLLECTOR_OPTIONS], ids=lambda option: option.name)
def test_option_is_in_the_readme_table(option: Option) -> None:
    flag = "--" + option.name.replace("_", "-")
    variable = "REALTIME_" + option.name.upper()
    assert f"| `{flag}` | `{variable}` |" in README
