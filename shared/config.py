"""Settings from command-line flags with ``REALTIME_*`` environment defaults.

Each process declares every setting once, as a field of a frozen dataclass whose default comes from
:func:`setting` (default, parser, help text); :func:`options_of` turns those fields into the
:class:`Option` table that yields the flag, the variable and the ``--help`` line, and
:func:`build_settings` loads them at start-up. A flag wins over its environment variable, which wins
over the default. A bad value stops the process with a message that names the flag or variable;
nothing reads ``os.environ`` after start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

ENV_PREFIX: Final = "REALTIME_"
# The dataclass field metadata key under which setting() keeps the parser and help text.
_SETTING: Final = "realtime_setting"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; ``key`` names the flag or variable."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its field name, how to parse it, its default and its help text.

    The flag is ``--name-with-dashes`` and the variable ``REALTIME_NAME_IN_CAPITALS``.
    ``secret`` hides the value in ``--help`` and in start-up logs.
    """

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


@dataclass(frozen=True, slots=True)
class _SettingSpec:
    parse: Callable[[str], Any]
    help: str
    secret: bool


def setting(default: T, parse: Callable[[str], T], help: str, *, secret: bool = False) -> T:
    """A settings dataclass field: its default, how to parse a flag or variable, and its help text."""
    return dataclasses.field(default=default, metadata={_SETTING: _SettingSpec(parse, help, secret)})


def options_of(settings_type: type[Any]) -> tuple[Option, ...]:
    """The :class:`Option` of every :func:`setting` field of a settings dataclass, in field order."""
    options = []
    for field in dataclasses.fields(settings_type):
        spec = field.metadata.get(_SETTING)
        if spec is None:
            raise TypeError(f"{settings_type.__name__}.{field.name} is not declared with setting()")
        options.append(Option(field.name, spec.parse, field.default, spec.help, spec.secret))
    return tuple(options)


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also rejects NaN
        raise ValueError("must be a number >= 0")
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def port_number(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port 0-65535")
    return value


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def text(raw: str) -> str:
    return raw


def optional_text(raw: str) -> str | None:
    return raw or None


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def network_list(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (``10.0.0.0/8, ::1/128``); a bare address is a /32 or /128."""
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in comma_list(raw))
    except ValueError as error:
        raise ValueError(f"not a list of CIDRs: {error}") from None


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def add_option_arguments(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One flag per option (its value defaults to None so the environment can fill it in)."""
    for option in options:
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.name.upper(),
            help=f"{option.help} [env {option.env}; default {shown_default(option)}]".replace("%", "%%"),
        )


def resolve_options(
    options: Sequence[Option], flags: Mapping[str, str | None], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Apply flag > environment > default precedence; raise :class:`ConfigError` naming the key."""
    values: dict[str, Any] = {}
    for option in options:
        raw = flags.get(option.name)
        key = option.flag
        if raw is None and option.env in environ:
            raw, key = environ[option.env], option.env
        if raw is None:
            values[option.name] = option.default
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as error:
            raise ConfigError(key, str(error) or "invalid value") from None
    return values


def fail(parser: argparse.ArgumentParser, error: ConfigError) -> NoReturn:
    parser.error(str(error))


SettingsT = TypeVar("SettingsT")


def build_settings(
    settings_type: type[SettingsT],
    argv: Sequence[str] | None,
    environ: Mapping[str, str],
    *,
    prog: str,
    description: str,
) -> SettingsT:
    """Load the settings dataclass from flags and variables; exit naming the key on any bad value (a flag
    or variable that does not parse: a usage error, exit status 2)."""
    options = options_of(settings_type)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_option_arguments(parser, options)
    namespace = parser.parse_args(argv)
    try:
        values = resolve_options(options, vars(namespace), environ)
    except ConfigError as error:
        fail(parser, error)
    try:
        return settings_type(**values)
    except ConfigError as error:
        raise SystemExit(f"{prog}: error: {error}") from None


def split_urls(text: str) -> list[str]:
    """``nats://a:4222, nats://b:4222`` -> a list of server URLs."""
    return list(comma_list(text))


def shown_default(option: Option) -> str:
    """How a default reads in docs and ``--help``: secrets and unset values as ``(unset)``."""
    value = option.default
    if option.secret or value is None or value == ():
        return "(unset)"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def markdown_table(settings_type: type[Any]) -> str:
    """The README table of a settings dataclass: flag, variable, default, meaning (one row each)."""
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for option in options_of(settings_type):
        rows.append(f"| `{option.flag}` | `{option.env}` | {shown_default(option)} | {option.help} |")
    return "\n".join(rows) + "\n"
