"""The words the residents' page uses, decided once on the gateway."""

from __future__ import annotations

import pytest

from gateway.config import PagesConfig, Thresholds
from gateway.config.polder import PolderConfig
from gateway.park.registry import Device
from gateway.park.resident import polder_level, public_series, resident_view, wifi_word

TH = Thresholds(waspada=150, siaga=200, awas=250)
NOW = 1_800_000_000 * 10**9


@pytest.mark.parametrize(("states", "word"), [
    ([], "unknown"),
    (["unknown", "unknown"], "unknown"),
    (["online"], "normal"),
    (["online", "online"], "normal"),
    (["online", "offline"], "gangguan"),
    (["online", "unknown"], "gangguan"),
    (["offline", "offline"], "mati"),
    (["offline", "unknown"], "mati"),
])
def test_wifi_in_words(states: list[str], word: str) -> None:
    assert wifi_word(states) == word


@pytest.mark.parametrize(("value", "level"), [
    (None, "unknown"), (-5.0, "normal"), (149.99, "normal"), (150.0, "waspada"),
    (199.9, "waspada"), (200.0, "siaga"), (249.0, "siaga"), (250.0, "awas"), (900.0, "awas"),
])
def test_a_threshold_reached_is_already_that_level(value: float | None, level: str) -> None:
    assert polder_level(value, TH) == level


def test_thresholds_must_rise() -> None:
    with pytest.raises(ValueError, match="waspada < siaga < awas"):
        Thresholds(waspada=200, siaga=150, awas=250)


def device(id: str, kind: str, state: str = "online", **latest: float | str | bool
           ) -> Device:
    return Device(id=id, name=id, kind=kind, site="taman", zone=None, interval_s=60,
                  source="", origin="config", state=state, latest=dict(latest),
                  latest_ns=NOW - 60 * 10**9 if latest else None)


def test_the_view_reads_the_configured_devices_and_marks_old_values_stale() -> None:
    pages = PagesConfig.model_validate({
        "name": "Taman Uji", "fresh_s": 30, "garden": {"device": "kebun-1"}})
    polder = PolderConfig(device="polder-1", thresholds=TH)
    devices = {d.id: d for d in (
        device("ap-1", "wifi_ap", clients=3), device("ap-2", "wifi_ap", "offline"),
        device("polder-1", "polder", level_cm=210.0),
        device("kebun-1", "garden_env", temperature_c=True, humidity_pct=80),
        device("elsewhere", "wifi_ap", "offline"))}
    devices["elsewhere"].site = "taman-lain"
    view = resident_view(site="taman", pages=pages, wifi_kind="wifi_ap", devices=devices,
                         clients_now=3, now_ns=NOW, polder=polder)
    assert view["wifi"] == {"status": "gangguan", "aps_up": 1, "aps_total": 2,
                            "clients_now": 3}
    assert view["polder"]["level"] == "siaga"
    assert view["polder"]["stale"] is True  # heard 60 s ago, fresh_s 30
    assert view["garden"]["temperature_c"] is None  # a boolean is not a temperature
    assert view["garden"]["humidity_pct"] == 80.0
    assert view["updated_ns"] == NOW - 60 * 10**9
    assert public_series(pages, "taman", polder) == {
        ("taman", "wifi_clients"), ("polder-1", "level_cm"), ("kebun-1", "temperature_c"),
        ("kebun-1", "humidity_pct")}


@pytest.mark.parametrize(("state", "measured"), [
    ("online", True), ("unknown", True), ("offline", False), ("unmonitored", False)])
def test_the_polder_is_not_measured_while_its_sensor_cannot_be_seen(state: str,
                                                                    measured: bool) -> None:
    pages = PagesConfig.model_validate({"fresh_s": 900})
    polder = device("polder-1", "polder", state, level_cm=260.0)
    polder.since_ns = NOW - 30 * 10**9
    view = resident_view(site="taman", pages=pages, wifi_kind="wifi_ap",
                         devices={"polder-1": polder}, clients_now=None, now_ns=NOW,
                         polder=PolderConfig(device="polder-1", thresholds=TH))["polder"]
    assert view["measured"] is measured
    assert view["state"] == state
    if measured:
        assert (view["value"], view["level"], view["not_measured_since_ns"]) == (
            260.0, "awas", None)
    else:
        # Not an old level shown as the water now: no value, no level, since when.
        assert (view["value"], view["level"], view["stale"]) == (None, "unknown", True)
        assert view["not_measured_since_ns"] == NOW - 30 * 10**9
        assert view["time_ns"] == NOW - 60 * 10**9  # when it was last measured
