"""The operator token's defences: wrong tokens throttled per address (429 + Retry-After, counted
in /metrics), sessions the gateway remembers and revokes on sign-out, bounded memory for both,
and malformed cookies of any shape refused with 401, never 500. Unit tests drive the window with
a FakeClock; the HTTP tests run against the real gateway, broker and InfluxDB."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from gateway.web.auth import COOKIE, MAX_SESSIONS, MAX_TRACKED, OperatorAuth, Throttled, file_store
from tests.conftest import OPERATOR, OPERATOR_TOKEN, base_config, gateway_in_process

TOKEN = "t" * 24
MALFORMED = ["", ".", "....", "." * 500, "1" * 5000 + ".abc", "1" * 5000,
             "x" * 10_000, "é.ü", "\u2603" * 40 + "." + "0" * 64,
             "A" * 32 + "." + "0" * 64, "A" * 32 + ".." + "0" * 63, "-1.abc",
             "A" * 32 + "." + "G" * 64, "  " + "A" * 32 + "." + "0" * 62]


# -- unit: the throttle ------------------------------------------------------------------------


def test_wrong_tokens_throttle_their_address_only_and_the_window_ends() -> None:
    clock = FakeClock()
    auth = OperatorAuth(TOKEN, max_age_s=3600, attempts=5, window_s=300, clock=clock)
    for _ in range(5):
        assert not auth.check_token("wrong", "10.0.0.9")
    with pytest.raises(Throttled) as throttled:
        auth.check_token("wrong", "10.0.0.9")
    assert throttled.value.retry_after_s == 300
    clock.advance(100)
    # The right token from a throttled address is refused too: otherwise 429 vs 204 would
    # tell a guesser which of its guesses was right.
    with pytest.raises(Throttled) as throttled:
        auth.check_token(TOKEN, "10.0.0.9")
    assert throttled.value.retry_after_s == 200
    assert auth.check_token(TOKEN, "10.0.0.10")  # other addresses are not affected
    assert auth.check_token(None, "10.0.0.9") is False  # no token given: nothing to throttle
    clock.advance(200)
    assert auth.check_token(TOKEN, "10.0.0.9")  # the window ended
    stats = auth.statistics()
    assert stats["token_refusals"] == 5
    assert stats["token_throttled"] == 2


def test_few_wrong_tokens_spread_over_windows_never_throttle() -> None:
    clock = FakeClock()
    auth = OperatorAuth(TOKEN, max_age_s=3600, attempts=3, window_s=60, clock=clock)
    for _ in range(10):
        assert not auth.check_token("wrong", "10.0.0.9")
        assert not auth.check_token("wrong", "10.0.0.9")
        clock.advance(61)
    assert auth.check_token(TOKEN, "10.0.0.9")
    assert auth.statistics()["token_throttled"] == 0


def test_a_flood_of_addresses_cannot_grow_the_throttle() -> None:
    auth = OperatorAuth(TOKEN, max_age_s=3600, clock=FakeClock())
    for i in range(MAX_TRACKED * 3):
        auth.check_token("wrong", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert auth.tracked_addresses() == MAX_TRACKED


# -- unit: sessions ----------------------------------------------------------------------------


def test_sign_out_revokes_and_the_store_is_bounded_and_pruned() -> None:
    clock = FakeClock()
    auth = OperatorAuth(TOKEN, max_age_s=3600, clock=clock)
    first = auth.new_session()
    assert auth.session_ok(first)
    assert auth.revoke(first)
    assert not auth.session_ok(first)  # replayed after sign-out
    assert not auth.revoke(first)
    cookies = [auth.new_session() for _ in range(MAX_SESSIONS + 20)]
    assert auth.active_sessions() == MAX_SESSIONS
    assert not any(auth.session_ok(c) for c in cookies[:20])  # the oldest dropped
    assert all(auth.session_ok(c) for c in cookies[20:])
    clock.advance(3601)
    assert auth.active_sessions() == 0
    assert not auth.session_ok(cookies[-1])


def test_sessions_survive_a_restart_but_not_a_new_token(tmp_path: Path) -> None:
    clock = FakeClock()
    load, save = file_store(tmp_path / "sessions.json")
    auth = OperatorAuth(TOKEN, max_age_s=3600, clock=clock, load=load, save=save)
    kept, gone = auth.new_session(), auth.new_session()
    auth.revoke(gone)
    assert (tmp_path / "sessions.json").stat().st_mode & 0o777 == 0o600
    again = OperatorAuth(TOKEN, max_age_s=3600, clock=clock, load=load, save=save)
    assert again.session_ok(kept)
    assert not again.session_ok(gone)
    other = OperatorAuth("n" * 24, max_age_s=3600, clock=clock, load=load, save=save)
    assert not other.session_ok(kept)
    assert other.active_sessions() == 0
    (tmp_path / "sessions.json").write_text("{not json", encoding="utf-8")
    assert OperatorAuth(TOKEN, max_age_s=3600, clock=clock, load=load).active_sessions() == 0


@pytest.mark.parametrize("cookie", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_cookies_are_not_sessions(cookie: str) -> None:
    auth = OperatorAuth(TOKEN, max_age_s=3600, clock=FakeClock())
    auth.new_session()
    assert not auth.session_ok(cookie)
    assert not auth.revoke(cookie)


# -- against the real gateway ------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


async def test_http_throttle_sessions_and_malformed_cookies(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    cfg["api"].update(token_attempts=3, token_window_s=600)
    async with gateway_in_process(tmp_path, cfg) as gw:
        base = str(gw.http.base_url)
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=base, timeout=5) as guesser, \
                httpx.AsyncClient(base_url=base, timeout=5, transport=other) as elsewhere:
            # malformed cookies of every shape: 401, never 500
            for cookie in MALFORMED:
                raw = [(b"cookie", COOKIE.encode() + b"=" + cookie.encode("utf-8"))]
                for path in ("/api/v1/session", "/api/v1/status"):
                    answer = await guesser.get(path, headers=raw)
                    assert answer.status_code == 401, (cookie[:40], path, answer.text)
            # 100 kB: the HTTP server refuses the header before the app (H1's header limit)
            # or the app says 401; either way never a 5xx.
            huge = await guesser.get("/api/v1/status",
                                     headers=[(b"cookie", COOKIE.encode() + b"=" + b"9" * 100_000)])
            assert huge.status_code in (400, 401, 431), huge.status_code
            # sign in, sign out, replay
            signed = await elsewhere.post("/api/v1/session", json={"token": OPERATOR_TOKEN})
            assert signed.status_code == 204
            value = elsewhere.cookies[COOKIE]
            assert (await elsewhere.get("/api/v1/status")).status_code == 200
            assert (await elsewhere.delete("/api/v1/session")).status_code == 204
            replay = [(b"cookie", f"{COOKIE}={value}".encode())]
            assert (await guesser.get("/api/v1/status", headers=replay)).status_code == 401
            # wrong tokens from 127.0.0.1 (bearer and sign-in both count)
            for _ in range(2):
                wrong = await guesser.get("/api/v1/status",
                                          headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401
            assert (await guesser.post("/api/v1/session",
                                       json={"token": "nope"})).status_code == 401
            for attempt in ({"Authorization": "Bearer nope"}, OPERATOR):
                throttled = await guesser.get("/api/v1/status", headers=attempt)
                assert throttled.status_code == 429, throttled.text
                assert 1 <= int(throttled.headers["Retry-After"]) <= 600
            again = await guesser.post("/api/v1/session", json={"token": OPERATOR_TOKEN})
            assert again.status_code == 429
            assert "Retry-After" in again.headers
            # the right token still works from another address
            scrape = await elsewhere.get("/metrics", headers=OPERATOR)
            assert scrape.status_code == 200
            text = scrape.text
            assert metric(text, "garden_gateway_api_token_refusals_total") == 3
            assert metric(text, "garden_gateway_api_token_throttled_total") == 3
            assert metric(text, "garden_gateway_api_sessions_revoked_total") == 1
            assert metric(text, "garden_gateway_api_sessions_active") == 0
