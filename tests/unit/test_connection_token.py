"""Connection tokens: signed, user-bound, expiring, URL-safe, verifiable by any replica."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.transport.connection_token import (
    ConnectionTokenSigner,
    InvalidConnectionToken,
    NegotiatedConnection,
    derive_secret,
    new_connection_id,
)

URL_SAFE = re.compile(r"[A-Za-z0-9_.-]+")
TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_signer(
    clock: FakeClock | None = None, *, secret: bytes = b"k" * 32, ttl: float = 30.0, replica: str = "replica-a"
) -> ConnectionTokenSigner:
    return ConnectionTokenSigner(secret=secret, ttl_seconds=ttl, replica=replica, clock=clock or FakeClock())


def test_version_1_round_trip_has_a_separate_22_character_id() -> None:
    signer = make_signer()
    issued = signer.issue(user_id="user-1", negotiate_version=1)
    assert len(issued.connection_id) == 22
    assert issued.connection_id != issued.connection_token
    assert issued.connection_token.startswith(issued.connection_id + ".")
    assert issued.negotiate_version == 1
    assert signer.verify(issued.connection_token, user_id="user-1") == issued


def test_version_0_public_id_is_the_token() -> None:
    signer = make_signer()
    issued = signer.issue(user_id="user-1", negotiate_version=0)
    assert issued.connection_id == issued.connection_token
    assert issued.negotiate_version == 0
    assert signer.verify(issued.connection_token, user_id="user-1") == NegotiatedConnection(
        issued.connection_token, issued.connection_token, 0, "replica-a"
    )


def test_token_without_user_round_trips() -> None:
    signer = make_signer()
    issued = signer.issue(user_id=None, negotiate_version=1)
    assert signer.verify(issued.connection_token, user_id=None) == issued


def test_another_replica_with_the_same_secret_verifies_and_sees_the_owner() -> None:
    clock = FakeClock()
    issued = make_signer(clock, replica="replica-a").issue(user_id="u", negotiate_version=1)
    verified = make_signer(clock, replica="replica-b").verify(issued.connection_token, user_id="u")
    assert verified == issued and verified.owner == "replica-a"


def test_the_stateful_flag_round_trips_and_is_signed() -> None:
    signer = make_signer()
    stateful = signer.issue(user_id="u", negotiate_version=1, stateful=True)
    assert signer.verify(stateful.connection_token, user_id="u").stateful
    plain = signer.issue(user_id="u", negotiate_version=1)
    assert not signer.verify(plain.connection_token, user_id="u").stateful
    parts = plain.connection_token.split(".")
    parts[2] += "s"
    with pytest.raises(InvalidConnectionToken):
        signer.verify(".".join(parts), user_id="u")


def test_an_expired_token_still_names_its_connection_for_a_resume() -> None:
    clock = FakeClock(1_000.0)
    signer = make_signer(clock, ttl=30.0)
    issued = signer.issue(user_id="u", negotiate_version=1, stateful=True)
    clock.now = 5_000.0
    with pytest.raises(InvalidConnectionToken):
        signer.verify(issued.connection_token, user_id="u")
    assert signer.verify(issued.connection_token, user_id="u", allow_expired=True) == issued


def test_token_from_another_secret_is_rejected() -> None:
    issued = make_signer(secret=b"a" * 32).issue(user_id="u", negotiate_version=1)
    with pytest.raises(InvalidConnectionToken):
        make_signer(secret=b"b" * 32).verify(issued.connection_token, user_id="u")


def test_token_of_another_user_is_rejected() -> None:
    signer = make_signer()
    issued = signer.issue(user_id="alice", negotiate_version=1)
    with pytest.raises(InvalidConnectionToken):
        signer.verify(issued.connection_token, user_id="mallory")
    with pytest.raises(InvalidConnectionToken):
        signer.verify(issued.connection_token, user_id=None)


def test_token_expires_after_the_ttl() -> None:
    clock = FakeClock(1_000.0)
    signer = make_signer(clock, ttl=30.0)
    issued = signer.issue(user_id="u", negotiate_version=1)
    clock.now = 1_030.0
    assert signer.verify(issued.connection_token, user_id="u") == issued
    clock.now = 1_030.5
    with pytest.raises(InvalidConnectionToken):
        signer.verify(issued.connection_token, user_id="u")


@pytest.mark.parametrize(
    ("part", "forged"),
    [(2, "0"), (1, "ffffffff"), (3, "replica-z")],
    ids=["version-downgrade", "extended-expiry", "owner"],
)
def test_a_forged_part_is_rejected(part: int, forged: str) -> None:
    """``<connection id>.<expiry>.<version>.<owner>.<mac>`` with one part replaced and the MAC kept."""
    signer = make_signer()
    parts = signer.issue(user_id="u", negotiate_version=1).connection_token.split(".")
    parts[part] = forged
    with pytest.raises(InvalidConnectionToken):
        signer.verify(".".join(parts), user_id="u")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b.c",
        "a.b.c.d",
        "a.b.c.d.e.f",
        "....",
        "AAAAAAAAAAAAAAAAAAAAAA.zz.1.r.AAAAAAAAAAAAAAAAAAAAAA",
        "é.ü.1.r.ö",
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidConnectionToken):
        make_signer().verify(token, user_id="u")


@given(position=st.integers(min_value=0), replacement=st.sampled_from(TOKEN_ALPHABET))
def test_any_changed_character_is_rejected(position: int, replacement: str) -> None:
    signer = make_signer()
    token = signer.issue(user_id="u", negotiate_version=1).connection_token
    index = position % len(token)
    if token[index] in (".", replacement):
        return
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(InvalidConnectionToken):
        signer.verify(tampered, user_id="u")


def test_tokens_and_ids_are_url_safe() -> None:
    signer = make_signer()
    for version in (0, 1) * 100:
        issued = signer.issue(user_id="someone@example.com", negotiate_version=version)
        assert URL_SAFE.fullmatch(issued.connection_token)
        assert URL_SAFE.fullmatch(issued.connection_id)


def test_connection_ids_are_distinct_22_character_base64url() -> None:
    ids = {new_connection_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", value) for value in ids)


def test_derive_secret_is_deterministic_and_domain_separated() -> None:
    derived = derive_secret(b"jwt-secret")
    assert derived == derive_secret(b"jwt-secret")
    assert len(derived) == 32
    assert derived != derive_secret(b"jwt-secret2")
    assert b"jwt-secret" not in derived
