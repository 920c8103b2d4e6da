"""Access-token verification: pinned algorithm, required exp, issuer/audience, ASP.NET claim names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth import (
    AuthenticationError,
    Principal,
    TokenVerifier,
    principal_from_claims,
    verifier_from_key_material,
)

SECRET = "unit-test-secret-0123456789abcdef-xyz"
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAMEID_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
NAME_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def hs256_verifier(**overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {"secret": SECRET, "public_key_file": None, "issuer": None, "audience": None}
    options["leeway_seconds"] = 30.0
    options.update(overrides)
    return verifier_from_key_material(**options)


def hs256_token(**claims: Any) -> str:
    payload: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 600}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, algorithm="HS256")


def public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_file_verifier(tmp_path: Path, pem: bytes, **overrides: Any) -> TokenVerifier:
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    options: dict[str, Any] = {"secret": None, "public_key_file": str(path), "issuer": None, "audience": None}
    options["leeway_seconds"] = 0.0
    options.update(overrides)
    return verifier_from_key_material(**options)


# -- algorithms ---------------------------------------------------------------------------------


def test_hs256_token_is_accepted() -> None:
    verifier = hs256_verifier()
    principal = verifier.verify(hs256_token(sub="user-42", name="Alice", role="Admin", exp=2_000_000_000))
    assert verifier.algorithm == "HS256"
    assert principal == Principal(user_id="user-42", name="Alice", roles=frozenset({"Admin"}), expires_at=2e9)


def test_hs256_token_signed_with_another_secret_is_rejected() -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "another-secret-0123456789abcdef-xyz", "HS256")
    with pytest.raises(AuthenticationError) as caught:
        hs256_verifier().verify(token)
    assert caught.value.reason == "invalid token (InvalidSignatureError)"


def test_alg_none_is_rejected() -> None:
    token = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment({'sub': 'u', 'exp': int(time.time()) + 60})}."
    with pytest.raises(AuthenticationError) as caught:
        hs256_verifier().verify(token)
    assert caught.value.reason == "token algorithm not allowed"


def test_rs256_accepts_rs256_token(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = key_file_verifier(tmp_path, public_pem(rsa_key))
    token = jwt.encode({"sub": "rsa-user", "exp": int(time.time()) + 60, "roles": ["Admin"]}, rsa_key, "RS256")
    principal = verifier.verify(token)
    assert verifier.algorithm == "RS256"
    assert (principal.user_id, principal.roles) == ("rsa-user", frozenset({"Admin"}))


def test_es256_accepts_es256_token(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = key_file_verifier(tmp_path, public_pem(ec_key))
    token = jwt.encode({"sub": "ec-user", "exp": int(time.time()) + 60}, ec_key, "ES256")
    assert verifier.algorithm == "ES256"
    assert verifier.verify(token).user_id == "ec-user"


def test_hs256_token_signed_with_the_rsa_public_key_is_rejected(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """Algorithm confusion: the attacker uses the (public) PEM bytes as an HMAC secret."""
    pem = public_pem(rsa_key)
    verifier = key_file_verifier(tmp_path, pem)
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment({'sub': 'x', 'exp': 4_000_000_000})}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(f"{signing_input}.{_b64(signature)}")
    assert caught.value.reason == "token algorithm not allowed"


def test_rs256_token_is_rejected_by_an_es256_verifier(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = key_file_verifier(tmp_path, public_pem(ec_key))
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, rsa_key, "RS256")
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(token)
    assert caught.value.reason == "token algorithm not allowed"


def test_key_material_requires_a_secret_or_a_key_file() -> None:
    with pytest.raises(ValueError, match="either a secret or a public key file"):
        verifier_from_key_material(secret=None, public_key_file=None, issuer=None, audience=None, leeway_seconds=0)


def test_ed25519_public_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"RSA \(RS256\) or EC P-256 \(ES256\)"):
        key_file_verifier(tmp_path, public_pem(ed25519.Ed25519PrivateKey.generate()))


def test_p384_public_key_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        key_file_verifier(tmp_path, public_pem(ec.generate_private_key(ec.SECP384R1())))


def test_verify_raises_only_authentication_error_for_a_mismatched_curve(ec_key: ec.EllipticCurvePrivateKey) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    verifier = TokenVerifier(key=p384.public_key(), algorithm="ES256", issuer=None, audience=None, leeway_seconds=0)
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, ec_key, "ES256")
    with pytest.raises(AuthenticationError):
        verifier.verify(token)


# -- exp and leeway -----------------------------------------------------------------------------


def test_token_without_exp_is_rejected() -> None:
    token = jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationError) as caught:
        hs256_verifier().verify(token)
    assert caught.value.reason == "token lacks the 'exp' claim"


def test_token_expired_beyond_leeway_is_rejected() -> None:
    token = hs256_token(exp=int(time.time()) - 120)
    with pytest.raises(AuthenticationError) as caught:
        hs256_verifier(leeway_seconds=30.0).verify(token)
    assert caught.value.reason == "token expired"


def test_token_expired_within_leeway_is_accepted() -> None:
    expired_at = int(time.time()) - 5
    principal = hs256_verifier(leeway_seconds=30.0).verify(hs256_token(exp=expired_at))
    assert principal.expires_at == float(expired_at)


def test_token_with_non_numeric_exp_is_rejected() -> None:
    with pytest.raises(AuthenticationError) as caught:
        hs256_verifier().verify(hs256_token(exp="tomorrow"))
    assert caught.value.reason.startswith("invalid token")


# -- issuer and audience ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "claim", "accepted", "rejected", "error"),
    [
        ("issuer", "iss", ["https://id.example"], "https://evil.example", "InvalidIssuerError"),
        ("audience", "aud", ["admin-dashboard", ["other", "admin-dashboard"]], "shop", "InvalidAudienceError"),
    ],
    ids=["issuer", "audience"],
)
def test_issuer_and_audience_are_enforced_when_configured(
    setting: str, claim: str, accepted: list[Any], rejected: str, error: str
) -> None:
    verifier = hs256_verifier(**{setting: accepted[0]})
    for value in accepted:
        assert verifier.verify(hs256_token(**{claim: value})).user_id == "user-1"
    with pytest.raises(AuthenticationError) as wrong:
        verifier.verify(hs256_token(**{claim: rejected}))
    assert wrong.value.reason == f"invalid token ({error})"
    with pytest.raises(AuthenticationError) as missing:
        verifier.verify(hs256_token())
    assert missing.value.reason == f"token lacks the '{claim}' claim"


def test_issuer_and_audience_are_ignored_when_not_configured() -> None:
    principal = hs256_verifier().verify(hs256_token(iss="https://anyone.example", aud="some-api"))
    assert principal.user_id == "user-1"


# -- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"role": "Admin"}, {"Admin"}),
        ({"role": ["Admin", "Support"]}, {"Admin", "Support"}),
        ({"roles": ["Auditor"]}, {"Auditor"}),
        ({"roles": "Auditor"}, {"Auditor"}),
        ({ROLE_URI: "Admin"}, {"Admin"}),
        ({ROLE_URI: ["Admin", 7]}, {"Admin"}),
        ({"role": "A", "roles": ["B"], ROLE_URI: "C"}, {"A", "B", "C"}),
        ({}, set()),
    ],
)
def test_roles_come_from_every_role_claim(claims: dict[str, Any], roles: set[str]) -> None:
    assert hs256_verifier().verify(hs256_token(**claims)).roles == frozenset(roles)


@pytest.mark.parametrize(
    ("claims", "user_id"),
    [
        ({"sub": "from-sub"}, "from-sub"),
        ({"sub": None, "nameid": "from-nameid"}, "from-nameid"),
        ({"sub": None, NAMEID_URI: "from-uri"}, "from-uri"),
        ({"sub": "first", "nameid": "second", NAMEID_URI: "third"}, "first"),
        ({"sub": None}, None),
    ],
)
def test_user_id_comes_from_sub_nameid_or_the_uri_claim(claims: dict[str, Any], user_id: str | None) -> None:
    assert hs256_verifier().verify(hs256_token(**claims)).user_id == user_id


def test_name_comes_from_name_unique_name_or_the_uri_claim() -> None:
    assert principal_from_claims({"exp": 1, "unique_name": "bob"}).name == "bob"
    assert principal_from_claims({"exp": 1, NAME_URI: "carol"}).name == "carol"
    assert principal_from_claims({"exp": 1}).name is None


def test_has_any_role() -> None:
    principal = Principal(user_id=None, name=None, roles=frozenset({"Admin", "Support"}), expires_at=0)
    assert principal.has_any_role(["Support"])
    assert not principal.has_any_role(["Owner"])
    assert not principal.has_any_role([])


def test_reason_never_contains_the_token(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    bad_tokens = [
        jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"),
        hs256_token(exp=now - 3600),
        hs256_token()[:-3] + "AAA",
        "not-a-jwt-at-all",
        f"{_segment({'alg': 'none'})}.{_segment({'exp': now + 60})}.",
        jwt.encode({"sub": "u", "exp": now + 60}, rsa_key, "RS256"),
    ]
    verifier = hs256_verifier(issuer="https://id.example", audience="admin")
    for token in bad_tokens:
        with pytest.raises(AuthenticationError) as caught:
            verifier.verify(token)
        reason = caught.value.reason
        assert token not in reason
        assert all(part not in reason for part in token.split(".") if len(part) > 8)
        assert str(caught.value) == reason
        assert caught.value.__cause__ is None
