"""``python -m scripts.readme_settings``: rewrite the README's configuration tables from the settings.

Each table sits between ``<!-- settings:<process> -->`` and ``<!-- /settings:<process> -->``; the unit
test ``tests/unit/test_readme_settings.py`` fails when a table differs from what this writes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gateway.settings import GatewaySettings
from shared.config import markdown_table
from stats_collector.settings import CollectorSettings

README: Final = Path(__file__).resolve().parents[1] / "README.md"
TABLES: Final[dict[str, type[Any]]] = {"gateway": GatewaySettings, "collector": CollectorSettings}


def with_tables(text: str) -> str:
    """``text`` with every marked table replaced by the generated one."""
    for name, settings_type in TABLES.items():
        pattern = re.compile(rf"(<!-- settings:{name} -->\n).*?(<!-- /settings:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- settings:{name} --> ... <!-- /settings:{name} --> block")
        text = pattern.sub(_replacement(markdown_table(settings_type)), text)
    return text


def _replacement(table: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return match.group(1) + table + match.group(2)

    return replace


def main() -> int:
    README.write_text(with_tables(README.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
