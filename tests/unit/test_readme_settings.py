"""The README's configuration tables name every flag and variable the processes read."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from shared.config import Option, options_of
from stats_collector.settings import CollectorSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize(
    "option", [*options_of(GatewaySettings), *options_of(CollectorSettings)], ids=lambda option: option.name
)
def test_option_is_in_the_readme_table(option: Option) -> None:
    flag = "--" + option.name.replace("_", "-")
    variable = "REALTIME_" + option.name.upper()
    assert f"| `{flag}` | `{variable}` |" in README
