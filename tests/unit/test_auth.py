"""Access-token verification: keys chosen by kid and algorithm, each pinned to its algorithm, required exp,
issuer/audience, ASP.NET claim names, and claims of any shape ending in a 401 rather than an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge.subjects import user_subject
from gateway.auth import (
    MAX_CLAIM_CHARS,
    AuthenticationError,
    FixedKeys,
    KeySet,
    Principal,
    TokenVerifier,
    VerificationKey,
    pem_public_key,
    principal_from_claims,
    secret_key,
)
from shared.interning import SharedValues

SECRET = "unit-test-secret-0123456789abcdef-xyz"
OTHER_SECRET = "another-secret-0123456789abcdef-xyz"
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAMEID_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
NAME_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def hs256_signed(payload: str, *, header: dict[str, Any] | None = None) -> str:
    """A token with a raw JSON payload and any header (what PyJWT would not encode), signed with SECRET."""
    signing_input = f"{_segment(header or {'alg': 'HS256', 'typ': 'JWT'})}.{_b64(payload.encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def verifier_of(*keys: VerificationKey, **overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {"issuer": None, "audience": None, "leeway_seconds": 30.0}
    options.update(overrides)
    return TokenVerifier(keys=FixedKeys(KeySet(keys)), **options)


def hs256_verifier(**overrides: Any) -> TokenVerifier:
    return verifier_of(secret_key(SECRET), **overrides)


def hs256_token(*, headers: dict[str, Any] | None = None, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 600}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, "HS256", headers=headers)


def public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def rejection(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    assert caught.value.__cause__ is None
    return caught.value.reason


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_file(tmp_path: Path, pem: bytes) -> VerificationKey:
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    return pem_public_key(path)


# -- algorithms ---------------------------------------------------------------------------------


async def test_hs256_token_is_accepted() -> None:
    principal = await hs256_verifier().verify(hs256_token(sub="user-42", name="Alice", role="Admin", exp=2_000_000_000))
    assert principal == Principal(user_id="user-42", name="Alice", roles=frozenset({"Admin"}), expires_at=2e9)


async def test_hs256_token_signed_with_another_secret_is_rejected() -> None:
    token = hs256_token(secret=OTHER_SECRET)
    assert await rejection(hs256_verifier(), token) == "invalid token (InvalidSignatureError)"


async def test_alg_none_is_rejected() -> None:
    token = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment({'sub': 'u', 'exp': int(time.time()) + 60})}."
    assert await rejection(hs256_verifier(), token) == "token algorithm not allowed"


async def test_rs256_accepts_rs256_token(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    key = key_file(tmp_path, public_pem(rsa_key))
    token = jwt.encode({"sub": "rsa-user", "exp": int(time.time()) + 60, "roles": ["Admin"]}, rsa_key, "RS256")
    principal = await verifier_of(key).verify(token)
    assert key.algorithm == "RS256"
    assert (principal.user_id, principal.roles) == ("rsa-user", frozenset({"Admin"}))


async def test_es256_accepts_es256_token(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    key = key_file(tmp_path, public_pem(ec_key))
    token = jwt.encode({"sub": "ec-user", "exp": int(time.time()) + 60}, ec_key, "ES256")
    assert key.algorithm == "ES256"
    assert (await verifier_of(key).verify(token)).user_id == "ec-user"


async def test_hs256_token_signed_with_the_rsa_public_key_is_rejected(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Algorithm confusion: the attacker uses the (public) PEM bytes as an HMAC secret."""
    pem = public_pem(rsa_key)
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment({'sub': 'x', 'exp': 4_000_000_000})}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(signature)}"
    assert await rejection(verifier_of(key_file(tmp_path, pem)), token) == "token algorithm not allowed"


async def test_rs256_token_is_rejected_by_an_es256_verifier(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, rsa_key, "RS256")
    assert await rejection(verifier_of(key_file(tmp_path, public_pem(ec_key))), token) == "token algorithm not allowed"


async def test_a_known_kid_does_not_lift_the_algorithm_pin(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = verifier_of(VerificationKey(rsa_key.public_key(), "RS256", "k1"))
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, rsa_key, "PS256", headers={"kid": "k1"})
    assert await rejection(verifier, token) == "token algorithm not allowed"


def test_ed25519_public_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"RSA \(RS256\) or EC P-256 \(ES256\)"):
        key_file(tmp_path, public_pem(ed25519.Ed25519PrivateKey.generate()))


def test_p384_public_key_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        key_file(tmp_path, public_pem(ec.generate_private_key(ec.SECP384R1())))


@pytest.mark.parametrize(
    ("make", "algorithm", "problem"),
    [
        (lambda: b"k" * 32, "RS256", "a secret key verifies HS256, HS384 or HS512, not RS256"),
        (lambda: b"k" * 32, "none", "a secret key verifies HS256, HS384 or HS512, not none"),
        (lambda: b"k" * 31, "HS256", "HS256 needs a key of at least 32 bytes"),
        (lambda: b"k" * 63, "HS512", "HS512 needs a key of at least 64 bytes"),
        (lambda: rsa.generate_private_key(65537, 2048).public_key(), "HS256", "an RSA key verifies"),
        (lambda: rsa.generate_private_key(65537, 2048).public_key(), "ES256", "an RSA key verifies"),
        (lambda: rsa.generate_private_key(65537, 1024).public_key(), "RS256", "at least 2048 bits"),  # noqa: S505
        (lambda: ec.generate_private_key(ec.SECP384R1()).public_key(), "ES256", "does not verify ES256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()).public_key(), "HS256", "does not verify HS256"),
        (lambda: ed25519.Ed25519PrivateKey.generate().public_key(), "EdDSA", "unsupported key type"),
    ],
)
def test_a_key_cannot_be_pinned_to_an_algorithm_it_does_not_fit(make: Any, algorithm: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        VerificationKey(make(), algorithm)


def test_a_key_fits_the_algorithms_of_its_type() -> None:
    rsa_public = rsa.generate_private_key(65537, 2048).public_key()
    for algorithm in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        assert VerificationKey(rsa_public, algorithm).algorithm == algorithm
    assert VerificationKey(ec.generate_private_key(ec.SECP384R1()).public_key(), "ES384").algorithm == "ES384"
    assert VerificationKey(ec.generate_private_key(ec.SECP521R1()).public_key(), "ES512").algorithm == "ES512"
    assert VerificationKey(b"k" * 64, "HS512").algorithm == "HS512"


# -- choosing the key: kid and algorithm ----------------------------------------------------------------------


class CountingSource:
    """A KeySource whose refresh swaps in the next key set and counts the calls."""

    def __init__(self, first: KeySet, after_refresh: KeySet) -> None:
        self.keys = first
        self.after_refresh = after_refresh
        self.refreshes = 0

    def current(self) -> KeySet:
        return self.keys

    async def refresh_for_unknown_kid(self) -> KeySet:
        self.refreshes += 1
        self.keys = self.after_refresh
        return self.keys


def rsa_token(key: rsa.RSAPrivateKey, kid: str | None, **claims: Any) -> str:
    payload = {"sub": "u", "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, key, "RS256", headers={"kid": kid} if kid else None)


async def test_the_kid_selects_the_key(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = verifier_of(
        VerificationKey(rsa_key.public_key(), "RS256", "a"), VerificationKey(other_rsa_key.public_key(), "RS256", "b")
    )
    assert (await verifier.verify(rsa_token(rsa_key, "a", sub="signed-by-a"))).user_id == "signed-by-a"
    assert (await verifier.verify(rsa_token(other_rsa_key, "b", sub="signed-by-b"))).user_id == "signed-by-b"
    # A's signature under B's kid: only B is tried.
    assert await rejection(verifier, rsa_token(rsa_key, "b")) == "invalid token (InvalidSignatureError)"


async def test_without_kid_each_key_of_the_tokens_algorithm_is_tried(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = verifier_of(
        VerificationKey(ec_key.public_key(), "ES256", "ec"),
        VerificationKey(rsa_key.public_key(), "RS256", "a"),
        VerificationKey(other_rsa_key.public_key(), "RS256", "b"),
    )
    assert (await verifier.verify(rsa_token(other_rsa_key, None, sub="no-kid"))).user_id == "no-kid"
    stranger = rsa.generate_private_key(65537, 2048)
    assert await rejection(verifier, rsa_token(stranger, None)) == "invalid token (InvalidSignatureError)"


async def test_an_unknown_kid_refreshes_once_then_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = KeySet([VerificationKey(rsa_key.public_key(), "RS256", "a")])
    source = CountingSource(keys, keys)
    verifier = TokenVerifier(keys=source, issuer=None, audience=None, leeway_seconds=0)
    assert await rejection(verifier, rsa_token(rsa_key, "z")) == "token key id (kid) is not known"
    assert source.refreshes == 1
    await verifier.verify(rsa_token(rsa_key, "a"))
    await verifier.verify(rsa_token(rsa_key, None))
    assert source.refreshes == 1  # known kid, or none: no refresh


async def test_only_an_unknown_kid_waits_for_the_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    """The middleware decides without awaiting unless the token names a key id not known yet."""
    keys = KeySet([VerificationKey(rsa_key.public_key(), "RS256", "a")])
    source = CountingSource(keys, keys)
    verifier = TokenVerifier(keys=source, issuer=None, audience=None, leeway_seconds=0)
    principal = verifier.verify_with_current_keys(rsa_token(rsa_key, "a", sub="known"))
    assert principal is not None and principal.user_id == "known"
    assert verifier.verify_with_current_keys(rsa_token(rsa_key, "z")) is None
    with pytest.raises(AuthenticationError, match="token expired"):
        verifier.verify_with_current_keys(rsa_token(rsa_key, "a", exp=int(time.time()) - 3600))
    assert source.refreshes == 0


async def test_a_kid_that_appears_after_the_refresh_is_accepted(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    old = VerificationKey(rsa_key.public_key(), "RS256", "a")
    new = VerificationKey(other_rsa_key.public_key(), "RS256", "b")
    source = CountingSource(KeySet([old]), KeySet([old, new]))
    verifier = TokenVerifier(keys=source, issuer=None, audience=None, leeway_seconds=0)
    assert (await verifier.verify(rsa_token(other_rsa_key, "b", sub="new"))).user_id == "new"
    assert source.refreshes == 1


async def test_keys_without_kid_serve_tokens_with_any_kid() -> None:
    """A secret or a PEM key has no kid; an issuer that puts one in its tokens still works."""
    token = hs256_token(headers={"kid": "issuer-key-7"})
    assert (await hs256_verifier().verify(token)).user_id == "user-1"


async def test_a_kid_that_is_not_a_string_is_rejected() -> None:
    token = hs256_signed(f'{{"sub":"u","exp":{int(time.time()) + 60}}}', header={"alg": "HS256", "kid": 7})
    assert (await rejection(hs256_verifier(), token)).startswith("invalid token")


async def test_keys_embedded_in_the_token_header_are_ignored(rsa_key: rsa.RSAPrivateKey) -> None:
    """``jwk``/``jku`` headers name keys chosen by whoever made the token: never used."""
    attacker = rsa.generate_private_key(65537, 2048)
    embedded = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    headers = {"kid": "a", "jwk": embedded, "jku": "https://evil.example/jwks"}
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, attacker, "RS256", headers=headers)
    verifier = verifier_of(VerificationKey(rsa_key.public_key(), "RS256", "a"))
    assert await rejection(verifier, token) == "invalid token (InvalidSignatureError)"


# -- exp and leeway -----------------------------------------------------------------------------


async def test_token_without_exp_is_rejected() -> None:
    token = jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")
    assert await rejection(hs256_verifier(), token) == "token lacks the 'exp' claim"


async def test_token_expired_beyond_leeway_is_rejected() -> None:
    token = hs256_token(exp=int(time.time()) - 120)
    assert await rejection(hs256_verifier(leeway_seconds=30.0), token) == "token expired"


async def test_token_expired_within_leeway_is_accepted() -> None:
    expired_at = int(time.time()) - 5
    principal = await hs256_verifier(leeway_seconds=30.0).verify(hs256_token(exp=expired_at))
    assert principal.expires_at == float(expired_at)


@pytest.mark.parametrize(
    ("exp", "reason"),
    [
        ('"tomorrow"', "invalid token (DecodeError)"),
        ("true", "token expired"),  # PyJWT reads true as 1
        ("1e309", "invalid token (DecodeError)"),  # infinity
        ("NaN", "invalid token (DecodeError)"),
        ("1" + "0" * 400, "token exp is out of range"),  # an int no float can hold
        ('{"at": 1}', "invalid token (DecodeError)"),
    ],
)
async def test_token_with_an_unusable_exp_is_rejected(exp: str, reason: str) -> None:
    assert await rejection(hs256_verifier(), hs256_signed(f'{{"sub":"u","exp":{exp}}}')) == reason


# -- issuer and audience ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "claim", "accepted", "rejected", "error"),
    [
        ("issuer", "iss", ["https://id.example"], "https://evil.example", "InvalidIssuerError"),
        ("audience", "aud", ["admin-dashboard", ["other", "admin-dashboard"]], "billing-api", "InvalidAudienceError"),
    ],
    ids=["issuer", "audience"],
)
async def test_issuer_and_audience_are_enforced_when_configured(
    setting: str, claim: str, accepted: list[Any], rejected: str, error: str
) -> None:
    verifier = hs256_verifier(**{setting: accepted[0]})
    for value in accepted:
        assert (await verifier.verify(hs256_token(**{claim: value}))).user_id == "user-1"
    assert await rejection(verifier, hs256_token(**{claim: rejected})) == f"invalid token ({error})"
    assert await rejection(verifier, hs256_token()) == f"token lacks the '{claim}' claim"


async def test_issuer_and_audience_are_ignored_when_not_configured() -> None:
    principal = await hs256_verifier().verify(hs256_token(iss="https://anyone.example", aud="some-api"))
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
        ({"role": "A", "roles": ["B"], ROLE_URI: "C"}, {"A", "B", "C"}),
        ({"roles": []}, set()),
        ({}, set()),
    ],
)
async def test_roles_come_from_every_role_claim(claims: dict[str, Any], roles: set[str]) -> None:
    assert (await hs256_verifier().verify(hs256_token(**claims))).roles == frozenset(roles)


@pytest.mark.parametrize(
    ("claims", "user_id"),
    [
        ({"sub": "from-sub"}, "from-sub"),
        ({"sub": None, "nameid": "from-nameid"}, "from-nameid"),
        ({"sub": None, NAMEID_URI: "from-uri"}, "from-uri"),
        ({"sub": None, "nameid": ["first-of-list", "second"]}, "first-of-list"),
        ({"sub": "first", "nameid": "second", NAMEID_URI: "third"}, "first"),
        ({"sub": "x" * MAX_CLAIM_CHARS}, "x" * MAX_CLAIM_CHARS),
        ({"sub": None}, None),
    ],
)
async def test_user_id_comes_from_sub_nameid_or_the_uri_claim(claims: dict[str, Any], user_id: str | None) -> None:
    assert (await hs256_verifier().verify(hs256_token(**claims))).user_id == user_id


def test_name_comes_from_name_unique_name_or_the_uri_claim() -> None:
    assert principal_from_claims({"exp": 1, "unique_name": "bob"}).name == "bob"
    assert principal_from_claims({"exp": 1, NAME_URI: "carol"}).name == "carol"
    assert principal_from_claims({"exp": 1}).name is None


TOO_LONG = "x" * (MAX_CLAIM_CHARS + 1)


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ({"sub": TOO_LONG}, "user id"),
        ({"sub": "é" * (MAX_CLAIM_CHARS + 1)}, "user id"),
        ({"sub": ""}, "user id"),
        ({"nameid": TOO_LONG}, "user id"),
        ({NAMEID_URI: ["ok", TOO_LONG]}, "user id"),
        ({"nameid": {"nested": ["garbage"]}}, "user id"),
        ({"nameid": 42}, "user id"),
        ({"nameid": None}, "user id"),
        ({"name": TOO_LONG}, "name"),
        ({"unique_name": ["a", ["b"]]}, "name"),
        ({"role": 7}, "role"),
        ({"roles": {"Admin": True}}, "role"),
        ({"roles": ["Admin", 7]}, "role"),
        ({"roles": ["Admin", ["Admin"]]}, "role"),
        ({"roles": ["Admin", TOO_LONG]}, "role"),
        ({ROLE_URI: [None]}, "role"),
        ({"role": True}, "role"),
    ],
)
async def test_claims_of_the_wrong_shape_are_401_not_an_exception(payload: dict[str, Any], what: str) -> None:
    token = hs256_signed(json.dumps({**payload, "exp": int(time.time()) + 60}))
    reason = await rejection(hs256_verifier(), token)
    assert reason == f"token {what} claim is not a string of 1 to {MAX_CLAIM_CHARS} characters"


async def test_a_lone_surrogate_in_sub_is_401() -> None:
    """JSON can spell a lone surrogate; it could be neither a NATS subject nor a SignalR frame."""
    token = hs256_signed(f'{{"sub":"\\ud800","exp":{int(time.time()) + 60}}}')
    assert await rejection(hs256_verifier(), token) == (
        f"token user id claim is not a string of 1 to {MAX_CLAIM_CHARS} characters"
    )


async def test_a_payload_that_is_not_an_object_is_401() -> None:
    for payload in ("[1,2]", '"text"', "null", "[[[[[[[[[[]]]]]]]]]]"):
        assert (await rejection(hs256_verifier(), hs256_signed(payload))).startswith("invalid token")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=MAX_CLAIM_CHARS + 8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
CLAIM_NAMES = st.sampled_from(["sub", "nameid", NAMEID_URI, "name", "unique_name", "role", "roles", ROLE_URI])


@given(claims=st.dictionaries(CLAIM_NAMES, JSON_VALUES, max_size=4), exp=JSON_VALUES | st.integers())
def test_any_claims_give_a_usable_principal_or_an_authentication_error(claims: dict[str, Any], exp: Any) -> None:
    """What reaches the hub can always become a user subject and a frame: never an exception there."""
    try:
        principal = principal_from_claims({**claims, "exp": exp})
    except AuthenticationError:
        return
    if principal.user_id is not None:
        user_subject(principal.user_id)
    for text in (principal.name, *principal.roles):
        assert text is None or (1 <= len(text) <= MAX_CLAIM_CHARS and text.encode())
    assert isinstance(principal.expires_at, float) and math.isfinite(principal.expires_at)


def test_principals_with_the_same_roles_share_one_set_up_to_the_limit() -> None:
    shared: SharedValues[frozenset[str]] = SharedValues(limit=1)
    first = principal_from_claims({"exp": 1, "role": ["Admin", "Support"]}, shared)
    second = principal_from_claims({"exp": 1, "role": ["Support", "Admin"]}, shared)
    assert second.roles is first.roles == frozenset({"Admin", "Support"})
    # Beyond the limit a combination is used as it comes: equal each time, never kept.
    third = principal_from_claims({"exp": 1, "role": "Owner"}, shared)
    fourth = principal_from_claims({"exp": 1, "role": "Owner"}, shared)
    assert third.roles == fourth.roles == frozenset({"Owner"})
    assert third.roles is not fourth.roles


def test_has_any_role() -> None:
    principal = Principal(user_id=None, name=None, roles=frozenset({"Admin", "Support"}), expires_at=0)
    assert principal.has_any_role(["Support"])
    assert not principal.has_any_role(["Owner"])
    assert not principal.has_any_role([])


async def test_reason_never_contains_the_token(rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    bad_tokens = [
        jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"),
        hs256_token(exp=now - 3600),
        hs256_token()[:-3] + "AAA",
        "not-a-jwt-at-all",
        f"{_segment({'alg': 'none'})}.{_segment({'exp': now + 60})}.",
        jwt.encode({"sub": "u", "exp": now + 60}, rsa_key, "RS256"),
        hs256_token(sub=TOO_LONG),
        hs256_token(headers={"kid": "secret-looking-kid-value"}, secret=OTHER_SECRET),
    ]
    verifier = hs256_verifier(issuer="https://id.example", audience="admin")
    for token in bad_tokens:
        with pytest.raises(AuthenticationError) as caught:
            await verifier.verify(token)
        reason = caught.value.reason
        assert token not in reason
        assert all(part not in reason for part in token.split(".") if len(part) > 8)
        assert '"' not in reason  # it goes into a quoted WWW-Authenticate parameter
        assert str(caught.value) == reason
        assert caught.value.__cause__ is None
