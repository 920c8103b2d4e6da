"""NATS client options from the process settings: secrets from files, TLS from a CA, clear causes."""

from __future__ import annotations

import ssl
from pathlib import Path

import nats.errors
import pytest

from broker_bridge.nats_failure import describe
from broker_bridge.nats_options import NatsConfigError, client_arguments, nats_options
from scripts.nats_pki import issue_pki
from shared.config import ConfigError, options_of, resolve_options
from shared.process_settings import ProcessSettings


def settings(**env: str) -> ProcessSettings:
    values = resolve_options(options_of(ProcessSettings), {}, {f"REALTIME_{k.upper()}": v for k, v in env.items()})
    return ProcessSettings(**values)


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_without_credentials_nothing_is_sent_and_tls_is_off() -> None:
    options = nats_options(settings(), name="x")
    assert options.auth.method == "none" and options.tls is None
    assert client_arguments(options) == {"inbox_prefix": "_INBOX"}


def test_password_and_token_come_from_files_read_at_each_attempt(tmp_path: Path) -> None:
    password = secret(tmp_path, "password", "s3cret\n")
    options = nats_options(settings(nats_user="gw", nats_password_file=password), name="x")
    assert client_arguments(options)["user"] == "gw"
    assert client_arguments(options)["password"] == "s3cret"
    Path(password).write_text("rotated\n")
    assert client_arguments(options)["password"] == "rotated"
    assert "s3cret" not in repr(options) and "rotated" not in repr(options)

    token = secret(tmp_path, "token", "tok\n")
    assert client_arguments(nats_options(settings(nats_token_file=token), name="x"))["token"] == "tok"


def test_nkey_and_creds_files_are_passed_as_paths(tmp_path: Path) -> None:
    seed = secret(tmp_path, "seed", "SUAAA\n")
    creds = secret(tmp_path, "creds", "-----BEGIN NATS USER JWT-----\n")
    assert client_arguments(nats_options(settings(nats_nkey_seed_file=seed), name="x"))["nkeys_seed"] == seed
    assert client_arguments(nats_options(settings(nats_creds_file=creds), name="x"))["user_credentials"] == creds


def test_an_unreadable_secret_fails_the_attempt_naming_the_file(tmp_path: Path) -> None:
    password = secret(tmp_path, "password", "pw")
    options = nats_options(settings(nats_user="gw", nats_password_file=password), name="x")
    Path(password).unlink()
    with pytest.raises(OSError) as raised:
        client_arguments(options)
    assert describe(raised.value).startswith(f"cannot read {password}")


def test_a_ca_turns_tls_on_first_with_mutual_certificates(tmp_path: Path) -> None:
    pki = issue_pki(tmp_path, servers=["n1"], clients=["gateway"])
    client = pki.client("gateway")
    options = nats_options(
        settings(
            nats_url="tls://nats:4222",
            nats_tls_ca_file=str(pki.ca),
            nats_tls_cert_file=str(client.cert),
            nats_tls_key_file=str(client.key),
            nats_tls_server_name="nats.realtime-admin.svc",
        ),
        name="x",
    )
    arguments = client_arguments(options)
    context = arguments["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert arguments["tls_handshake_first"] is True
    assert arguments["tls_hostname"] == "nats.realtime-admin.svc"


def test_a_tls_url_alone_verifies_against_the_system_store() -> None:
    options = nats_options(settings(nats_url="tls://nats:4222"), name="x")
    assert options.tls is not None and options.tls.ca_file is None
    assert isinstance(client_arguments(options)["tls"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"nats_user": "gw"}, "REALTIME_NATS_PASSWORD_FILE"),
        ({"nats_tls_cert_file": "CERT"}, "REALTIME_NATS_TLS_KEY_FILE"),
        ({"nats_user": "gw", "nats_password_file": "PW", "nats_token_file": "TOKEN"}, "REALTIME_NATS_TOKEN_FILE"),
        ({"nats_nkey_seed_file": "SEED", "nats_creds_file": "CREDS"}, "REALTIME_NATS_CREDS_FILE"),
    ],
    ids=["user-without-password", "cert-without-key", "user-and-token", "nkey-and-creds"],
)
def test_conflicting_settings_are_refused_by_name(tmp_path: Path, env: dict[str, str], named: str) -> None:
    files = {value: secret(tmp_path, value, "x") for value in ("PW", "TOKEN", "SEED", "CREDS", "CERT")}
    resolved = {key: files.get(value, value) for key, value in env.items()}
    with pytest.raises(NatsConfigError, match=named):
        nats_options(settings(**resolved), name="x")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nats://user:pw@nats:4222", "credentials in the URL are refused"),
        ("nats://tok@nats:4222", "credentials in the URL are refused"),
        ("http://nats:4222", "scheme"),
    ],
)
def test_urls_with_credentials_or_odd_schemes_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        settings(nats_url=url)
    assert "pw" not in str(raised.value).replace("REALTIME", "")


def test_a_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REALTIME_NATS_TLS_CA_FILE: no such file"):
        settings(nats_tls_ca_file=str(tmp_path / "absent.pem"))


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (nats.errors.Error("nats: 'Authorization Violation'"), "rejected the credentials"),
        (nats.errors.AuthorizationError(), "rejected the credentials"),
        (nats.errors.Error('nats: permissions violation for publish to "x"'), "denied a permission"),
        (ConnectionRefusedError(111, "refused"), "connection refused"),
        (TimeoutError(), "timed out"),
    ],
)
def test_failures_are_described_in_one_line(error: BaseException, cause: str) -> None:
    text = describe(error, auth_method="nkey")
    assert cause in text and "\n" not in text
