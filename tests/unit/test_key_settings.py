"""The key-source settings: each source checked at start (problems named by their variable), and the key
source, connection-token secret and failure metric the app builds from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.app import connection_token_secret, verification_keys
from gateway.auth import FixedKeys
from gateway.jwks import RefreshingKeySet
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from scripts.processes import free_port
from shared.config import ConfigError
from tests.support.jwks import SigningKey, jwks

SECRET = "file-secret-0123456789abcdef-0123456789"


def problem(**settings: Any) -> tuple[str, str]:
    with pytest.raises(ConfigError) as caught:
        GatewaySettings(**settings)
    return caught.value.key, caught.value.problem


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.rsa("k1")


# -- REALTIME_JWT_SECRET_FILE ----------------------------------------------------------------------


def test_the_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    from_file = GatewaySettings(jwt_secret_file=str(path))
    assert from_file.hs256_secret() == SECRET
    # The same key as the variable: the same derived connection-token secret on every replica.
    assert connection_token_secret(from_file) == connection_token_secret(GatewaySettings(jwt_secret=SECRET))
    keys = verification_keys(from_file, GatewayMetrics())
    assert isinstance(keys, FixedKeys)
    assert [(key.material, key.algorithm) for key in keys.current()] == [(SECRET.encode(), "HS256")]


def test_a_bad_secret_file_is_named(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("s" * 31 + "\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff" * 40)
    key = "REALTIME_JWT_SECRET_FILE"
    assert problem(jwt_secret_file=str(short)) == (key, "use at least 32 bytes (RFC 7518 3.2)")
    assert problem(jwt_secret_file=str(tmp_path / "missing")) == (key, "no such file")
    assert problem(jwt_secret_file=str(tmp_path)) == (key, "cannot read the file (Is a directory)")
    assert problem(jwt_secret_file=str(binary)) == (key, "not UTF-8 text")


# -- REALTIME_JWT_PUBLIC_KEY_FILE -------------------------------------------------------------------------


def test_a_public_key_file_must_hold_an_rsa_or_p256_key(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    ed = tmp_path / "ed25519.pem"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key, reason = problem(jwt_public_key_file=str(garbage))
    assert key == "REALTIME_JWT_PUBLIC_KEY_FILE" and "\n" not in reason
    assert problem(jwt_public_key_file=str(ed)) == (key, "the public key must be RSA (RS256) or EC P-256 (ES256)")


def test_a_public_key_needs_a_connection_token_secret(tmp_path: Path, signing_key: SigningKey) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(
        signing_key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = GatewaySettings(jwt_public_key_file=str(path))
    assert isinstance(verification_keys(settings, GatewayMetrics()), FixedKeys)
    with pytest.raises(SystemExit, match="REALTIME_CONNECTION_TOKEN_SECRET is required"):
        connection_token_secret(settings)


# -- REALTIME_JWT_JWKS_FILE ---------------------------------------------------------------------------


def test_a_jwks_file_is_loaded_at_start(tmp_path: Path, signing_key: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(signing_key)))
    settings = GatewaySettings(jwt_jwks_file=str(path), connection_token_secret=SECRET)
    keys = verification_keys(settings, GatewayMetrics())
    assert isinstance(keys, RefreshingKeySet) and keys.loaded
    assert [key.kid for key in keys.current()] == ["k1"]
    with pytest.raises(SystemExit, match="REALTIME_CONNECTION_TOKEN_SECRET is required"):
        connection_token_secret(GatewaySettings(jwt_jwks_file=str(path)))


def test_a_bad_jwks_file_is_named(tmp_path: Path, signing_key: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [signing_key.jwk(alg="HS256")]}))
    key = "REALTIME_JWT_JWKS_FILE"
    assert problem(jwt_jwks_file=str(path)) == (
        key,
        "key 0: an RSA key verifies RS256-RS512 or PS256-PS512, not HS256",
    )
    missing = str(tmp_path / "missing.json")
    assert problem(jwt_jwks_file=missing) == (key, "cannot read the file (No such file or directory)")
    path.write_text(json.dumps(jwks(signing_key)))
    assert problem(jwt_jwks_file=str(path), jwt_jwks_max_bytes=64) == (key, "file over 64 bytes")


# -- REALTIME_JWT_JWKS_URL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://id.example/.well-known/jwks.json", "http://127.0.0.1:8080/jwks", "http://localhost/jwks"]
)
def test_a_jwks_url_is_https_or_loopback(url: str) -> None:
    settings = GatewaySettings(jwt_jwks_url=url, connection_token_secret=SECRET)
    keys = verification_keys(settings, GatewayMetrics())
    assert isinstance(keys, RefreshingKeySet) and not keys.loaded  # loaded by the background task


@pytest.mark.parametrize("url", ["http://id.example/jwks", "ftp://id.example/jwks", "id.example/jwks", "https://"])
def test_a_jwks_url_that_could_be_tampered_with_is_refused(url: str) -> None:
    assert problem(jwt_jwks_url=url) == (
        "REALTIME_JWT_JWKS_URL",
        "use an https:// URL (http:// only to localhost)",
    )


async def test_a_failed_jwks_load_is_counted_by_reason() -> None:
    metrics = GatewayMetrics()
    settings = GatewaySettings(
        jwt_jwks_url=f"http://127.0.0.1:{free_port()}/jwks",
        connection_token_secret=SECRET,
        jwt_jwks_fetch_timeout_seconds=2,
    )
    keys = verification_keys(settings, metrics)
    assert isinstance(keys, RefreshingKeySet)
    await keys.refresh_for_unknown_kid()
    assert not keys.loaded
    assert metrics.registry.get_sample_value("realtime_jwks_fetch_failures_total", {"reason": "unreachable"}) == 1
