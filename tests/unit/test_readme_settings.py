"""The README's configuration tables are exactly what the settings declare (flag, variable, default, help)."""

from __future__ import annotations

from scripts.readme_settings import README, with_tables


def test_the_readme_tables_match_the_settings() -> None:
    text = README.read_text()
    assert text == with_tables(text), "run `python -m scripts.readme_settings` to rewrite the tables"
