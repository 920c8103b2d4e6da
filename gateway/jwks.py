"""JSON Web Key Sets (RFC 7517): parsed into :class:`~gateway.auth.KeySet` s, loaded from a URL or a
file, and kept fresh by :class:`RefreshingKeySet`.

A JWK becomes a :class:`~gateway.auth.VerificationKey` pinned to one algorithm: the JWK's ``alg`` when it
has one (it must fit the key, :func:`gateway.auth.check_algorithm`), else RS256 for RSA and ES256 for EC
P-256. Keys marked for encryption (``use: enc``, or ``key_ops`` without ``verify``) are not signing keys
and are left out. A key with private parts is refused (a key set is public). Symmetric (``oct``) keys are
accepted from a file only: a key served over HTTP is public, and a public HMAC key would let anyone sign.

From a URL, unusable entries are skipped (an identity provider may list keys for other purposes); from
a file, every entry must be usable, because the operator wrote it. Either way a set without a usable key
is a failure. Loading fails with :class:`JwksUnavailable`, whose ``kind`` labels the failure metric.

:class:`RefreshingKeySet` is the gateway's :class:`~gateway.auth.KeySource` for both:

* ``run()`` (a background task) loads at once, then every ``refresh_interval_seconds``; after a failure
  it retries sooner, from :data:`FIRST_RETRY_SECONDS` doubling up to ``refresh_min_seconds``;
* ``refresh_for_unknown_kid()`` loads now unless a load began less than ``refresh_min_seconds`` ago
  (then it answers with the keys it has), so tokens with made-up ``kid`` s cannot make every request
  hit the identity provider;
* one load at a time: whoever asks while a load runs waits for that one;
* a failure keeps the last good set, logs one warning line (no traceback) and is counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import KeyMaterial, KeySet, VerificationKey, default_algorithm

log = logging.getLogger(__name__)

# The first retry after a failed load comes soon (an identity provider restarting, a DNS blip); later
# ones back off to the refresh minimum.
FIRST_RETRY_SECONDS: Final = 1.0
# Read the HTTP answer in pieces of this size, so the size limit holds without buffering more.
READ_CHUNK_BYTES: Final = 16384

FailureKind = Literal["unreachable", "status", "too_large", "invalid"]


class JwksUnavailable(Exception):
    """A key set could not be loaded; ``reason`` is short and safe to log, ``kind`` labels the metric."""

    def __init__(self, reason: str, *, kind: FailureKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class UnusableKey(ValueError):
    """One JWK that cannot verify tokens; ``reason`` names why (never key material)."""


# -- parsing -------------------------------------------------------------------------------------------


def _is_signing_key(jwk: dict[str, Any]) -> bool:
    use = jwk.get("use")
    key_ops = jwk.get("key_ops")
    if use is not None and use != "sig":
        return False
    return key_ops is None or (isinstance(key_ops, list) and "verify" in key_ops)


def _b64url(value: object) -> bytes:
    if not isinstance(value, str):
        raise UnusableKey("an oct key without a base64url `k`")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise UnusableKey("an oct key without a base64url `k`") from None


def _material(jwk: dict[str, Any], *, allow_symmetric: bool) -> KeyMaterial:
    kty = jwk.get("kty")
    if kty == "oct":
        if not allow_symmetric:
            raise UnusableKey("a symmetric (oct) key is accepted from a file only")
        return _b64url(jwk.get("k"))
    if kty not in ("RSA", "EC"):
        raise UnusableKey("an unsupported key type (kty)")
    if "d" in jwk:
        raise UnusableKey("a private key in a key set")
    try:
        key = RSAAlgorithm.from_jwk(jwk) if kty == "RSA" else ECAlgorithm.from_jwk(jwk)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise UnusableKey(f"an invalid {kty} key") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise UnusableKey(f"an invalid {kty} key")
    return key


def key_from_jwk(jwk: object, *, allow_symmetric: bool) -> VerificationKey | None:
    """The verification key of one JWK; None for a key that is not for signatures; UnusableKey otherwise."""
    if not isinstance(jwk, dict):
        raise UnusableKey("an entry that is not a JSON object")
    if not _is_signing_key(jwk):
        return None
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise UnusableKey("a kid that is not a string")
    if alg is not None and not isinstance(alg, str):
        raise UnusableKey("an alg that is not a string")
    material = _material(jwk, allow_symmetric=allow_symmetric)
    try:
        if alg is None:
            alg = "HS256" if isinstance(material, bytes) else default_algorithm(material)
        return VerificationKey(material, alg, kid)
    except ValueError as error:
        raise UnusableKey(str(error)) from None


def parse_jwks(document: bytes, *, from_file: bool) -> KeySet:
    """The key set of a JWKS document (see the module docstring for what is accepted)."""
    try:
        parsed = json.loads(document)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise JwksUnavailable("not JSON", kind="invalid") from None
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        raise JwksUnavailable("no `keys` list", kind="invalid")
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        try:
            key = key_from_jwk(entry, allow_symmetric=from_file)
        except UnusableKey as error:
            if from_file:
                raise JwksUnavailable(f"key {index}: {error}", kind="invalid") from None
            skipped.append(str(error))
            continue
        if key is not None:
            keys.append(key)
    if not keys:
        detail = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        raise JwksUnavailable(f"no usable signing key{detail}", kind="invalid")
    return KeySet(keys)


# -- loading -------------------------------------------------------------------------------------------


class HttpJwksLoader:
    """GETs a JWKS URL with a total timeout and a size limit; redirects are not followed."""

    def __init__(self, *, url: str, timeout_seconds: float, max_bytes: int) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._timeout_seconds = timeout_seconds
        self._max_bytes = max_bytes

    async def load(self) -> KeySet:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(self._url, headers={"Accept": "application/json"}, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise JwksUnavailable(f"HTTP {response.status}", kind="status")
                body = await self._read(response)
        except TimeoutError:
            raise JwksUnavailable(f"no answer within {self._timeout_seconds:g} s", kind="unreachable") from None
        except aiohttp.ClientError as error:
            raise JwksUnavailable(type(error).__name__, kind="unreachable") from None
        return parse_jwks(body, from_file=False)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        too_large = JwksUnavailable(f"answer over {self._max_bytes} bytes", kind="too_large")
        if response.content_length is not None and response.content_length > self._max_bytes:
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
            body += chunk
            if len(body) > self._max_bytes:
                raise too_large
        return bytes(body)


class FileJwksLoader:
    """Reads a JWKS file (in a worker thread: the event loop never waits on the disk)."""

    def __init__(self, *, path: str | Path, max_bytes: int) -> None:
        self._path = Path(path)
        self._max_bytes = max_bytes

    def load_now(self) -> KeySet:
        """Read and parse synchronously (at start-up, before the event loop serves anything)."""
        try:
            with self._path.open("rb") as file:
                document = file.read(self._max_bytes + 1)
        except OSError as error:
            raise JwksUnavailable(f"cannot read the file ({error.strerror})", kind="unreachable") from None
        if len(document) > self._max_bytes:
            raise JwksUnavailable(f"file over {self._max_bytes} bytes", kind="too_large")
        return parse_jwks(document, from_file=True)

    async def load(self) -> KeySet:
        return await asyncio.to_thread(self.load_now)


# -- refreshing ----------------------------------------------------------------------------------------


class RefreshingKeySet:
    """A :class:`~gateway.auth.KeySource` loaded by ``load`` and kept fresh (see the module docstring)."""

    def __init__(
        self,
        *,
        load: Callable[[], Awaitable[KeySet]],
        refresh_interval_seconds: float,
        refresh_min_seconds: float,
        on_failure: Callable[[FailureKind], None],
        initial: KeySet | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._interval = refresh_interval_seconds
        self._min_interval = refresh_min_seconds
        self._on_failure = on_failure
        self._clock = clock
        self._keys = initial or KeySet()
        self._loaded = initial is not None
        self._last_start: float | None = None
        self._loading: asyncio.Task[bool] | None = None

    @property
    def loaded(self) -> bool:
        """Whether a load has ever succeeded (the gateway is not ready before)."""
        return self._loaded

    def current(self) -> KeySet:
        return self._keys

    async def refresh_for_unknown_kid(self) -> KeySet:
        recent = self._last_start is not None and self._clock() - self._last_start < self._min_interval
        if self._loading is None and recent:
            return self._keys
        await self._load_shared()
        return self._keys

    async def run(self) -> None:
        """Load now (or after one interval when started with keys), then keep the set fresh until cancelled."""
        first_retry = min(FIRST_RETRY_SECONDS, self._min_interval)
        retry = first_retry
        delay = self._interval if self._loaded else 0.0
        try:
            while True:
                await asyncio.sleep(delay)
                if await self._load_shared():
                    delay, retry = self._interval, first_retry
                else:
                    delay, retry = retry, min(retry * 2, self._min_interval)
        finally:
            if self._loading is not None:
                self._loading.cancel()

    async def _load_shared(self) -> bool:
        """Start a load unless one is running, and wait for it (a cancelled waiter does not cancel it)."""
        if self._loading is None:
            self._last_start = self._clock()
            self._loading = asyncio.create_task(self._load_once(), name="jwks load")
            self._loading.add_done_callback(self._forget_load)
        return await asyncio.shield(self._loading)

    def _forget_load(self, task: asyncio.Task[bool]) -> None:
        if self._loading is task:
            self._loading = None

    async def _load_once(self) -> bool:
        try:
            keys = await self._load()
        except JwksUnavailable as error:
            self._on_failure(error.kind)
            kept = f"keeping the last good set ({self._keys.describe()})" if self._loaded else "no keys yet"
            log.warning("loading the JWT keys failed: %s; %s", error.reason, kept)
            return False
        if not self._loaded or keys.describe() != self._keys.describe():
            log.info("JWT keys in use: %s", keys.describe())
        self._keys, self._loaded = keys, True
        return True
