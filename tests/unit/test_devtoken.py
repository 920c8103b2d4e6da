"""``python -m gateway.devtoken``: HS256 tokens with the secret, RS256/ES256 with a private key, and a kid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth import FixedKeys, KeySet, TokenVerifier
from gateway.devtoken import PrivateKey, main
from gateway.jwks import key_from_jwk
from tests.support.jwks import SigningKey

SECRET = "devtoken-test-secret-0123456789abcdef"


def printed(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.strip()


def pem(key: PrivateKey, path: Path) -> str:
    encoding, key_format = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    path.write_bytes(key.private_bytes(encoding, key_format, serialization.NoEncryption()))
    return str(path)


def test_a_secret_token_is_hs256(capsys: pytest.CaptureFixture[str]) -> None:
    token = printed(capsys, "--secret", SECRET, "--sub", "u1", "--role", "Admin", "--kid", "hs-1")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": "hs-1"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("u1", ["Admin"])


@pytest.mark.parametrize("make", [lambda: SigningKey.rsa("rsa-1"), lambda: SigningKey.ec("ec-1")])
async def test_a_private_key_token_verifies_with_its_published_jwk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: Callable[[], SigningKey]
) -> None:
    signing = make()
    argv = ["--private-key-file", pem(signing.private, tmp_path / "key.pem"), "--kid", signing.kid, "--sub", "u2"]
    token = printed(capsys, *argv)
    assert jwt.get_unverified_header(token)["alg"] == signing.algorithm
    key = key_from_jwk(signing.jwk(), allow_symmetric=False)
    assert key is not None
    verifier = TokenVerifier(keys=FixedKeys(KeySet([key])), issuer=None, audience=None, leeway_seconds=0)
    assert (await verifier.verify(token)).user_id == "u2"


def test_an_unsuitable_private_key_is_a_usage_error(tmp_path: Path) -> None:
    path = pem(ec.generate_private_key(ec.SECP384R1()), tmp_path / "p384.pem")
    with pytest.raises(SystemExit) as caught:
        main(["--private-key-file", path])
    assert caught.value.code == 2
