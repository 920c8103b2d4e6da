"""JWKS: which JWKs become keys (and pinned to which algorithm), the URL and file loaders with their limits,
and RefreshingKeySet's refresh rules, with a fake loader and a fake clock."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.auth import KeySet, VerificationKey
from gateway.jwks import (
    FileJwksLoader,
    HttpJwksLoader,
    JwksUnavailable,
    RefreshingKeySet,
    UnusableKey,
    key_from_jwk,
    parse_jwks,
)
from scripts.processes import free_port
from tests.support.jwks import SigningKey, jwks

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture(scope="module")
def key_a() -> SigningKey:
    return SigningKey.rsa("key-a")


@pytest.fixture(scope="module")
def key_b() -> SigningKey:
    return SigningKey.rsa("key-b")


def document(value: object) -> bytes:
    return json.dumps(value).encode()


def oct_jwk(secret: bytes, **fields: Any) -> dict[str, Any]:
    return {"kty": "oct", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode(), **fields}


# -- one JWK ----------------------------------------------------------------------------------------


def test_an_rsa_jwk_keeps_its_kid_and_alg(key_a: SigningKey) -> None:
    key = key_from_jwk(key_a.jwk(alg="PS256"), allow_symmetric=False)
    assert key is not None and (key.kid, key.algorithm) == ("key-a", "PS256")


def test_without_alg_rsa_is_rs256_and_p256_is_es256(key_a: SigningKey) -> None:
    rsa_key = key_from_jwk(key_a.jwk(alg=None), allow_symmetric=False)
    ec_key = key_from_jwk(SigningKey.ec("e").jwk(alg=None), allow_symmetric=False)
    assert rsa_key is not None and rsa_key.algorithm == "RS256"
    assert ec_key is not None and ec_key.algorithm == "ES256"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"alg": "HS256"}, "an RSA key verifies"),
        ({"alg": "ES256"}, "an RSA key verifies"),
        ({"alg": "none"}, "an RSA key verifies"),
        ({"alg": 256}, "an alg that is not a string"),
        ({"kid": 7}, "a kid that is not a string"),
        ({"kty": "OKP"}, "an unsupported key type"),
        ({"n": "not base64 !"}, "an invalid RSA key"),
        ({"d": "AQAB"}, "a private key in a key set"),
    ],
)
def test_an_rsa_jwk_that_cannot_verify_is_unusable(key_a: SigningKey, fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(UnusableKey, match=problem):
        key_from_jwk(key_a.jwk(**fields), allow_symmetric=False)


def test_an_ec_key_needs_alg_outside_p256() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = SigningKey("p384", ec.generate_private_key(ec.SECP384R1()), "ES384")
    key = key_from_jwk(p384.jwk(), allow_symmetric=False)
    assert key is not None and key.algorithm == "ES384"
    with pytest.raises(UnusableKey, match="RSA \\(RS256\\) or EC P-256"):
        key_from_jwk(p384.jwk(alg=None), allow_symmetric=False)
    with pytest.raises(UnusableKey, match="does not verify ES256"):
        key_from_jwk(p384.jwk(alg="ES256"), allow_symmetric=False)


@pytest.mark.parametrize("fields", [{"use": "enc"}, {"use": None, "key_ops": ["encrypt", "wrapKey"]}])
def test_encryption_keys_are_left_out(key_a: SigningKey, fields: dict[str, Any]) -> None:
    assert key_from_jwk(key_a.jwk(**fields), allow_symmetric=False) is None


def test_oct_keys_only_from_a_file() -> None:
    secret = b"s" * 32
    with pytest.raises(UnusableKey, match="accepted from a file only"):
        key_from_jwk(oct_jwk(secret, kid="h1"), allow_symmetric=False)
    key = key_from_jwk(oct_jwk(secret, kid="h1"), allow_symmetric=True)
    assert key == VerificationKey(secret, "HS256", "h1")
    with pytest.raises(UnusableKey, match="at least 32 bytes"):
        key_from_jwk(oct_jwk(b"s" * 31), allow_symmetric=True)
    with pytest.raises(UnusableKey, match="at least 64 bytes"):
        key_from_jwk(oct_jwk(secret, alg="HS512"), allow_symmetric=True)
    with pytest.raises(UnusableKey, match="not RS256"):
        key_from_jwk(oct_jwk(secret, alg="RS256"), allow_symmetric=True)
    with pytest.raises(UnusableKey, match="base64url"):
        key_from_jwk({"kty": "oct", "k": 5}, allow_symmetric=True)


# -- a JWKS document ---------------------------------------------------------------------------------


def test_a_jwks_becomes_a_key_set(key_a: SigningKey, key_b: SigningKey) -> None:
    keys = parse_jwks(document(jwks(key_a, key_b)), from_file=False)
    assert [(key.kid, key.algorithm) for key in keys] == [("key-a", "RS256"), ("key-b", "RS256")]


def test_from_a_url_unusable_entries_are_skipped(key_a: SigningKey, key_b: SigningKey) -> None:
    entries = [key_a.jwk(), "junk", key_b.jwk(use="enc"), oct_jwk(b"s" * 32), key_a.jwk(kid="short", n="AQAB")]
    keys = parse_jwks(document({"keys": entries}), from_file=False)
    assert [key.kid for key in keys] == ["key-a"]


def test_from_a_file_every_entry_must_be_usable(key_a: SigningKey) -> None:
    with pytest.raises(JwksUnavailable) as caught:
        parse_jwks(document({"keys": [key_a.jwk(), key_a.jwk(kid="bad", alg="HS256")]}), from_file=True)
    assert caught.value.kind == "invalid"
    assert caught.value.reason.startswith("key 1: an RSA key verifies")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "no `keys` list"),
        (b'{"keys": {}}', "no `keys` list"),
        (b'{"keys": []}', "no usable signing key"),
        (b'{"keys": [1, "two"]}', "no usable signing key (skipped: an entry that is not a JSON object; an entry"),
    ],
)
def test_a_document_without_a_usable_key_is_invalid(body: bytes, reason: str) -> None:
    with pytest.raises(JwksUnavailable) as caught:
        parse_jwks(body, from_file=False)
    assert caught.value.kind == "invalid"
    assert caught.value.reason.startswith(reason)


# -- the URL loader -----------------------------------------------------------------------------------


async def serve(aiohttp_server: ServerFactory, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/jwks"))


def loader(url: str, *, max_bytes: int = 65536, timeout_seconds: float = 5.0) -> HttpJwksLoader:
    return HttpJwksLoader(url=url, timeout_seconds=timeout_seconds, max_bytes=max_bytes)


async def failure(load: Callable[[], Awaitable[KeySet]]) -> JwksUnavailable:
    with pytest.raises(JwksUnavailable) as caught:
        await load()
    assert caught.value.__cause__ is None
    return caught.value


async def test_the_url_loader_reads_a_jwks(aiohttp_server: ServerFactory, key_a: SigningKey) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(jwks(key_a))

    keys = await loader(await serve(aiohttp_server, handler)).load()
    assert [key.kid for key in keys] == ["key-a"]


async def test_an_error_status_fails(aiohttp_server: ServerFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503)

    error = await failure(loader(await serve(aiohttp_server, handler)).load)
    assert (error.kind, error.reason) == ("status", "HTTP 503")


async def test_a_redirect_is_not_followed(aiohttp_server: ServerFactory, key_a: SigningKey) -> None:
    followed = []

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/elsewhere":
            followed.append(request.path)
            return web.json_response(jwks(key_a))
        raise web.HTTPFound("/elsewhere")

    error = await failure(loader(await serve(aiohttp_server, handler)).load)
    assert (error.kind, error.reason, followed) == ("status", "HTTP 302", [])


async def test_an_answer_over_the_limit_fails_with_or_without_content_length(
    aiohttp_server: ServerFactory, key_a: SigningKey
) -> None:
    body = document({**jwks(key_a), "padding": "x" * 5000})

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("chunked"):
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(body), 1000):
                await response.write(body[start : start + 1000])
            await response.write_eof()
            return response
        return web.Response(body=body, content_type="application/json")

    url = await serve(aiohttp_server, handler)
    for query in ("", "?chunked=1"):
        error = await failure(loader(url + query, max_bytes=4096).load)
        assert (error.kind, error.reason) == ("too_large", "answer over 4096 bytes")
    assert len(await loader(url + "?chunked=1", max_bytes=len(body)).load()) == 1


async def test_no_answer_within_the_timeout_fails(aiohttp_server: ServerFactory) -> None:
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    error = await failure(loader(await serve(aiohttp_server, handler), timeout_seconds=0.2).load)
    assert (error.kind, error.reason) == ("unreachable", "no answer within 0.2 s")


async def test_nothing_listening_fails() -> None:
    error = await failure(loader(f"http://127.0.0.1:{free_port()}/jwks").load)
    assert error.kind == "unreachable"


async def test_a_body_that_is_no_jwks_fails(aiohttp_server: ServerFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    error = await failure(loader(await serve(aiohttp_server, handler)).load)
    assert (error.kind, error.reason) == ("invalid", "not JSON")


# -- the file loader ---------------------------------------------------------------------------------------


async def test_the_file_loader_reads_oct_and_public_keys(tmp_path: Path, key_a: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(document({"keys": [key_a.jwk(), oct_jwk(b"s" * 32, kid="hs")]}))
    keys = await FileJwksLoader(path=path, max_bytes=65536).load()
    assert [(key.kid, key.algorithm) for key in keys] == [("key-a", "RS256"), ("hs", "HS256")]


async def test_the_file_loader_fails_on_a_missing_or_large_file(tmp_path: Path, key_a: SigningKey) -> None:
    missing = await failure(FileJwksLoader(path=tmp_path / "missing.json", max_bytes=65536).load)
    assert (missing.kind, missing.reason) == ("unreachable", "cannot read the file (No such file or directory)")
    path = tmp_path / "jwks.json"
    path.write_bytes(document(jwks(key_a)))
    large = await failure(FileJwksLoader(path=path, max_bytes=100).load)
    assert (large.kind, large.reason) == ("too_large", "file over 100 bytes")


# -- RefreshingKeySet ---------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLoader:
    """Answers each load with the next outcome (the last one repeats); ``gate``, when set, holds loads."""

    def __init__(self, *outcomes: KeySet | JwksUnavailable) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self._changed = asyncio.Condition()

    async def load(self) -> KeySet:
        self.calls += 1
        async with self._changed:
            self._changed.notify_all()
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if isinstance(outcome, JwksUnavailable):
            raise JwksUnavailable(outcome.reason, kind=outcome.kind)
        return outcome

    async def wait_for_calls(self, count: int) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: self.calls >= count)


def key_set(*kids: str) -> KeySet:
    return KeySet(VerificationKey(b"k" * 32, "HS256", kid) for kid in kids)


def kids(keys: KeySet) -> list[str | None]:
    return [key.kid for key in keys]


DOWN = JwksUnavailable("HTTP 503", kind="status")


def refreshing(fake: FakeLoader, clock: FakeClock, failures: list[str], **overrides: Any) -> RefreshingKeySet:
    options: dict[str, Any] = {"refresh_interval_seconds": 600.0, "refresh_min_seconds": 60.0}
    options.update(overrides)
    return RefreshingKeySet(load=fake.load, on_failure=failures.append, clock=clock, **options)


async def test_an_unknown_kid_loads_at_most_once_per_minimum_interval() -> None:
    fake, clock, failures = FakeLoader(key_set("a"), key_set("a", "b"), key_set("b")), FakeClock(), []
    keys = refreshing(fake, clock, failures)
    assert not keys.loaded and kids(keys.current()) == []
    assert kids(await keys.refresh_for_unknown_kid()) == ["a"]
    assert keys.loaded and fake.calls == 1
    clock.now += 59.9
    assert kids(await keys.refresh_for_unknown_kid()) == ["a"]
    assert fake.calls == 1  # too soon: answered with the keys it has
    clock.now += 0.1
    assert kids(await keys.refresh_for_unknown_kid()) == ["a", "b"]
    assert fake.calls == 2
    assert failures == []


async def test_callers_during_a_load_share_it() -> None:
    fake, clock = FakeLoader(key_set("a")), FakeClock()
    fake.gate = asyncio.Event()
    keys = refreshing(fake, clock, [])
    waiters = [asyncio.create_task(keys.refresh_for_unknown_kid()) for _ in range(5)]
    await fake.wait_for_calls(1)
    fake.gate.set()
    results = await asyncio.gather(*waiters)
    assert fake.calls == 1
    assert all(kids(result) == ["a"] for result in results)


async def test_a_cancelled_caller_does_not_cancel_the_load() -> None:
    """The request that set the load off may go away (client disconnect); the others still get the keys."""
    fake, clock = FakeLoader(key_set("a")), FakeClock()
    fake.gate = asyncio.Event()
    keys = refreshing(fake, clock, [])
    first = asyncio.create_task(keys.refresh_for_unknown_kid())
    await fake.wait_for_calls(1)
    second = asyncio.create_task(keys.refresh_for_unknown_kid())
    first.cancel()
    fake.gate.set()
    assert kids(await second) == ["a"]
    assert first.cancelled() and fake.calls == 1


async def test_a_failure_keeps_the_last_good_set_with_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    fake, clock, failures = FakeLoader(key_set("a"), DOWN, key_set("c")), FakeClock(), []
    keys = refreshing(fake, clock, failures)
    await keys.refresh_for_unknown_kid()
    clock.now += 60
    with caplog.at_level(logging.INFO, logger="gateway.jwks"):
        assert kids(await keys.refresh_for_unknown_kid()) == ["a"]
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in warnings] == [
        "loading the JWT keys failed: HTTP 503; keeping the last good set ('a':HS256)"
    ]
    assert warnings[0].exc_info is None
    assert failures == ["status"] and keys.loaded
    clock.now += 60
    assert kids(await keys.refresh_for_unknown_kid()) == ["c"]


@contextlib.asynccontextmanager
async def running(keys: RefreshingKeySet) -> AsyncIterator[None]:
    """``keys.run()`` as the gateway runs it: a task, cancelled at the end."""
    runner = asyncio.create_task(keys.run())
    try:
        yield
    finally:
        runner.cancel()
        await asyncio.wait({runner})


async def test_run_loads_at_once_then_every_interval() -> None:
    fake = FakeLoader(key_set("a"), key_set("b"), key_set("c"))
    keys = refreshing(fake, FakeClock(), [], refresh_interval_seconds=0.01)
    async with running(keys):
        await fake.wait_for_calls(3)
    assert keys.loaded and kids(keys.current()) in (["b"], ["c"])


async def test_run_retries_a_failed_first_load_and_is_not_loaded_before() -> None:
    fake, failures = FakeLoader(DOWN, DOWN, key_set("a")), []
    keys = refreshing(fake, FakeClock(), failures, refresh_min_seconds=0.01)
    async with running(keys):
        await fake.wait_for_calls(2)
        assert not keys.loaded  # the gateway's /readyz says "jwks" meanwhile
        await fake.wait_for_calls(3)
        await keys.refresh_for_unknown_kid()  # joins the third load (the fake clock says it is recent)
    assert failures == ["status", "status"] and kids(keys.current()) == ["a"]


async def test_run_with_an_initial_set_loads_after_one_interval() -> None:
    fake = FakeLoader(key_set("b"))
    keys = refreshing(fake, FakeClock(), [], initial=key_set("a"), refresh_interval_seconds=0.05)
    assert keys.loaded and kids(keys.current()) == ["a"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(keys):
        await fake.wait_for_calls(1)
    assert loop.time() - started >= 0.05


async def test_stopping_run_cancels_a_load_in_flight() -> None:
    fake = FakeLoader(key_set("a"))
    fake.gate = asyncio.Event()
    keys = refreshing(fake, FakeClock(), [])
    runner = asyncio.create_task(keys.run())
    await fake.wait_for_calls(1)
    waiter = asyncio.create_task(keys.refresh_for_unknown_kid())
    runner.cancel()
    await asyncio.wait({runner, waiter})
    assert waiter.cancelled() and not keys.loaded
