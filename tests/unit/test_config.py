"""Settings: flag > REALTIME_* variable > default, errors naming the key, GatewaySettings validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings, load_settings
from shared import config

SECRET = "s" * 32
OPTIONS = (
    config.Option("port", config.port_number, 5006, "port"),
    config.Option("max_message_bytes", config.positive_int, 32768, "limit"),
    config.Option("required_roles", config.comma_list, ("Admin",), "roles"),
    config.Option("log_level", config.one_of("INFO", "DEBUG"), "INFO", "level"),
)


def test_option_flag_and_env_names() -> None:
    option = config.Option("max_message_bytes", config.positive_int, 1, "help")
    assert option.flag == "--max-message-bytes"
    assert option.env == "REALTIME_MAX_MESSAGE_BYTES"


def test_flag_beats_env_beats_default() -> None:
    values = config.resolve_options(
        OPTIONS,
        {"port": "7000", "max_message_bytes": None},
        {"REALTIME_PORT": "8000", "REALTIME_MAX_MESSAGE_BYTES": "1024", "REALTIME_LOG_LEVEL": "DEBUG"},
    )
    assert values == {"port": 7000, "max_message_bytes": 1024, "required_roles": ("Admin",), "log_level": "DEBUG"}


def test_defaults_when_nothing_is_set() -> None:
    assert config.resolve_options(OPTIONS, {}, {"UNRELATED": "x"}) == {
        "port": 5006,
        "max_message_bytes": 32768,
        "required_roles": ("Admin",),
        "log_level": "INFO",
    }


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.resolve_options(OPTIONS, {"port": "70000"}, {"REALTIME_PORT": "1"})
    assert caught.value.key == "--port"
    assert caught.value.problem == "must be a TCP port 0-65535"
    assert str(caught.value) == "--port: must be a TCP port 0-65535"


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.resolve_options(OPTIONS, {}, {"REALTIME_MAX_MESSAGE_BYTES": "0"})
    assert caught.value.key == "REALTIME_MAX_MESSAGE_BYTES"
    assert caught.value.problem == "must be a positive integer"


def test_unparsable_number_names_the_variable() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.resolve_options(OPTIONS, {}, {"REALTIME_PORT": "eighty"})
    assert caught.value.key == "REALTIME_PORT"
    assert "eighty" in caught.value.problem


def test_empty_error_message_becomes_invalid_value() -> None:
    def parse(raw: str) -> str:
        raise ValueError

    with pytest.raises(config.ConfigError) as caught:
        config.resolve_options([config.Option("mode", parse, "a", "mode")], {"mode": "b"}, {})
    assert str(caught.value) == "--mode: invalid value"


@pytest.mark.parametrize(
    ("parse", "raw", "expected"),
    [
        (config.positive_int, "3", 3),
        (config.non_negative_float, "0", 0.0),
        (config.positive_float, "0.5", 0.5),
        (config.port_number, "0", 0),
        (config.port_number, "65535", 65535),
        (config.boolean, " Yes ", True),
        (config.boolean, "off", False),
        (config.optional_text, "", None),
        (config.optional_text, "x", "x"),
        (config.comma_list, " a, ,b ,", ("a", "b")),
        (config.comma_list, "", ()),
        (config.one_of("text", "json"), "json", "json"),
    ],
)
def test_parsers_accept(parse: object, raw: str, expected: object) -> None:
    assert parse(raw) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parse", "raw"),
    [
        (config.positive_int, "0"),
        (config.positive_int, "1.5"),
        (config.non_negative_float, "-0.1"),
        (config.non_negative_float, "nan"),
        (config.positive_float, "0"),
        (config.positive_float, "nan"),
        (config.port_number, "-1"),
        (config.port_number, "65536"),
        (config.one_of("text", "json"), "JSON"),
        (config.boolean, "maybe"),
    ],
)
def test_parsers_reject(parse: object, raw: str) -> None:
    with pytest.raises(ValueError):
        parse(raw)  # type: ignore[operator]


@dataclass(frozen=True, kw_only=True)
class Sample:
    port: int = config.setting(5006, config.port_number, "port")
    required_roles: tuple[str, ...] = config.setting(("Admin",), config.comma_list, "roles")


def test_build_settings_exits_with_a_message_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        config.build_settings(Sample, ["--port", "x"], {}, prog="prog", description="d")
    assert caught.value.code == 2
    assert "prog: error: --port: " in capsys.readouterr().err


def test_build_settings_reads_flags_and_environment() -> None:
    settings = config.build_settings(
        Sample, ["--required-roles", "Admin,Ops"], {"REALTIME_PORT": "1"}, prog="p", description=""
    )
    assert settings == Sample(port=1, required_roles=("Admin", "Ops"))


# -- GatewaySettings ----------------------------------------------------------------------------


KEY_SOURCES = (
    "REALTIME_JWT_SECRET / REALTIME_JWT_SECRET_FILE / REALTIME_JWT_PUBLIC_KEY_FILE / REALTIME_JWT_JWKS_FILE"
    " / REALTIME_JWT_JWKS_URL"
)


def test_settings_need_exactly_one_key_source() -> None:
    """More cases, one per source, are in test_key_settings.py."""
    with pytest.raises(config.ConfigError) as neither:
        GatewaySettings()
    assert (neither.value.key, neither.value.problem) == (KEY_SOURCES, "set exactly one of these (set: none)")
    with pytest.raises(config.ConfigError) as both:
        GatewaySettings(jwt_secret=SECRET, jwt_jwks_url="https://id.example/jwks")
    assert both.value.problem == "set exactly one of these (set: REALTIME_JWT_SECRET, REALTIME_JWT_JWKS_URL)"


def test_secret_needs_32_bytes() -> None:
    with pytest.raises(config.ConfigError) as caught:
        GatewaySettings(jwt_secret="s" * 31)
    assert caught.value.key == "REALTIME_JWT_SECRET"
    assert caught.value.problem == "use at least 32 bytes (RFC 7518 3.2)"
    assert GatewaySettings(jwt_secret="s" * 32).jwt_secret == "s" * 32
    assert GatewaySettings(jwt_secret="é" * 16).jwt_secret == "é" * 16  # 32 bytes in UTF-8


def test_public_key_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as caught:
        GatewaySettings(jwt_public_key_file=str(tmp_path / "missing.pem"))
    assert (caught.value.key, caught.value.problem) == ("REALTIME_JWT_PUBLIC_KEY_FILE", "no such file")


def test_roles_must_not_be_empty() -> None:
    with pytest.raises(config.ConfigError) as caught:
        GatewaySettings(jwt_secret=SECRET, required_roles=())
    assert caught.value.key == "REALTIME_REQUIRED_ROLES"


def test_nats_servers_splits_the_url_list() -> None:
    settings = GatewaySettings(jwt_secret=SECRET, nats_url=" nats://a:4222, ,nats://b:4222")
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]


def test_load_settings_types_every_value() -> None:
    settings = load_settings(
        ["--port", "6000", "--required-roles", "Admin, Support"],
        {
            "REALTIME_JWT_SECRET": SECRET,
            "REALTIME_PORT": "7000",
            "REALTIME_JWT_LEEWAY_SECONDS": "2.5",
            "REALTIME_CORS_ORIGINS": "https://a.example,https://b.example",
            "REALTIME_LOG_FORMAT": "json",
        },
    )
    assert settings.port == 6000
    assert settings.required_roles == ("Admin", "Support")
    assert settings.jwt_leeway_seconds == 2.5
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.log_format == "json"
    assert settings.max_message_bytes == 32768
    assert math.isclose(settings.connect_window_seconds, 30.0)


def test_load_settings_exits_naming_the_variable() -> None:
    with pytest.raises(SystemExit) as caught:
        load_settings([], {"REALTIME_JWT_SECRET": "short"})
    assert caught.value.code == ("python -m gateway: error: REALTIME_JWT_SECRET: use at least 32 bytes (RFC 7518 3.2)")


def test_load_settings_without_any_key_exits() -> None:
    with pytest.raises(SystemExit) as caught:
        load_settings([], {})
    assert caught.value.code == f"python -m gateway: error: {KEY_SOURCES}: set exactly one of these (set: none)"


def test_load_settings_bad_flag_exits_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load_settings(["--log-level", "TRACE"], {"REALTIME_JWT_SECRET": SECRET})
    assert caught.value.code == 2
    assert "--log-level: must be one of DEBUG, INFO, WARNING, ERROR" in capsys.readouterr().err
