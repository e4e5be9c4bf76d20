"""gateway.web.metrics.render: the /metrics text, read back with prometheus_client's own parser.

The snapshots are checked against the API's models first (``Status``, ``DeviceView``) and the
alert statistics are the real dataclasses, so a key renamed there breaks these tests instead of
silently emptying a metric.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import TypeAdapter

import gateway.web.metrics
from gateway.core.status import DeviceView, Status
from gateway.park.alerts import AlertStats, TargetStats
from gateway.web.metrics import CONTENT_TYPE
from gateway.web.metrics import render as render_status

SEC = 10**9
T0 = 1_700_000_000 * SEC
_DEVICES = TypeAdapter(list[DeviceView])


def status(**over: Any) -> dict[str, Any]:
    """A busy gateway's status(): one key per top-level section may be replaced."""
    alerts = AlertStats(enabled=True, waiting=1, down=2, suppressed=3, targets=(
        TargetStats(name="ops-telegram", kind="telegram", sent=12, failed=2, dropped=1,
                    retries=4, pending=1, last_error="HTTP 502", last_sent_ns=T0,
                    next_attempt_ns=None),
        TargetStats(name="hook", kind="webhook", sent=5, failed=0, dropped=0, retries=0,
                    pending=0, last_error=None, last_sent_ns=None, next_attempt_ns=None),
    ))
    raw: dict[str, Any] = {
        "gateway": {"id": "gw-taman-01", "site": "taman-suropati", "version": "0.1.0",
                    "uptime_s": 86400.5, "stopping": False},
        "mqtt": {"broker": "127.0.0.1:1883", "state": "connected", "connected": True,
                 "connects": 3, "disconnects": 2, "session_present": True, "last_error": None,
                 "redeliveries": 4, "redeliveries_matched": 4, "unacknowledged": 7,
                 "flow_pauses": 1},
        "influx": {"url": "http://influx:8086", "api": "v1", "state": "backoff",
                   "connected": None, "last_error": "connection refused",
                   "last_success_ns": None, "batches": 120, "retries": 5,
                   "next_attempt_in_s": None},
        "spool": {"rows": 42, "bytes": 4096, "max_bytes": 512 * 2**20, "file_bytes": 2**20,
                  "oldest_unsent_age_s": None, "pending_commit": 3, "commit_failures": 0,
                  "quarantine_rows": 2, "dead_letter_rows": 1, "evicted_for_reserve": 0,
                  "open_error": None},
        "counts": {"received": 1234, "readings": 1200, "rejected": 3, "spooled": 1250,
                   "own_points": 50, "acknowledged": 1230, "written": 1180, "quarantined": 2,
                   "dead_lettered": 3, "evicted": 0, "dropped_uncommitted": 0,
                   "presence_messages": 6, "macs_redacted": 9, "own_topics_ignored": 1},
        "totals": {"spooled": 1250, "written": 1180, "evicted": 0, "quarantined": 2,
                   "dead_lettered": 3},
        "sources": {
            "native": {"messages": 1000, "readings": 990,
                       "errors": {"malformed": 2, "range": 1},
                       "last_message_ns": T0 + SEC // 2, "last_error": "bad json"},
            "telegraf": {"messages": 234, "readings": 210, "errors": {},
                         "last_message_ns": None, "last_error": None},
        },
        "discovered_devices": ["ap-2"],
        "liveness": {"online": 1, "offline": 1, "unknown": 1, "devices": 3, "transitions": 4,
                     "reports": 10, "refused": 0},
        "wifi": {"aps": 1, "observed": 1, "reports": 10},
        "alerts": alerts.model_dump(),
        "serial": {
            "weather": {"port": "/dev/ttyUSB0", "open": True, "opens": 2, "bytes": 10240,
                        "lines": 300, "readings": 290, "errors": {"overlong": 1, "checksum": 4},
                        "last_error": "checksum", "last_reading_ns": T0},
        },
        "modbus": {
            "rs485-a": {
                "port": "/dev/ttyUSB1", "open": False, "opens": 1, "bytes_in": 5000,
                "bytes_out": 800, "polls": 100, "stray_bytes": 3, "errors": {"port_gone": 1},
                "last_error": "port gone", "last_reading_ns": T0,
                "slaves": {
                    "polder-1": slave(1, "online", errors={"timeout": 2}),
                    "polder-2": slave(2, "offline", errors={"timeout": 5, "crc": 1}),
                    "pump-3": slave(3, "unknown", errors={}),
                },
            },
        },
        "watchdog": {"alive": True, "why_not": None, "pings": 2880, "skips": 0},
        "disk": {"state": "ok", "since_ns": T0, "free_bytes": 2**30, "total_bytes": 2**34,
                 "min_free_bytes": 64 * 2**20, "failing": {}, "write_failures": {},
                 "not_recorded": {}, "notices": []},
        "clock": {"synced": True, "kernel_synchronised": True, "require_sync": "auto",
                  "boot_id": "5f3c", "since_boottime_s": 86400.0, "synced_at_ns": T0,
                  "last_step_s": 0.2, "held_rows": 0, "unsynced_rows": 0, "held": 12,
                  "released": 12, "kept_apart": 0, "held_evicted": 0, "refused_time": 1},
    }
    raw.update(over)
    return Status.model_validate(raw).model_dump()


def slave(unit: int, state: str, *, errors: dict[str, int]) -> dict[str, Any]:
    asked = 0 if state == "unknown" else 60
    return {
        "unit": unit, "state": state, "interval_s": 10.0, "polls": asked,
        "answered": asked - sum(errors.values()), "failures_in_row": 0,
        "went_offline": int(state == "offline"), "next_poll_in_s": None, "last_error": None,
        "last_reading_ns": T0 if asked else None, "errors": errors,
        "blocks": {"holding@0": {"function": "holding", "address": 0, "count": 4,
                                 "polls": asked, "ok": asked - sum(errors.values()),
                                 "errors": errors, "last_error": None,
                                 "last_exception": None, "last_ok_ns": None}},
    }


def device(id: str, state: str, *, kind: str | None = "polder", site: str = "taman-suropati",
           uptime: tuple[float | None, float | None, float | None] = (100.0, 100.0, 100.0),
           last_seen_ns: int | None = T0) -> dict[str, Any]:
    return {
        "id": id, "name": id.title(), "kind": kind, "site": site, "zone": None,
        "source": "native", "origin": "config", "interval_s": 60.0, "state": state,
        "since_ns": T0 - 3600 * SEC, "cause": "silent" if state == "offline" else None,
        "last_seen_ns": last_seen_ns, "presence": None, "latest": None,
        "uptime_pct": dict(zip(("24h", "7d", "30d"), uptime, strict=True)), "wifi": None,
    }


def render(status: dict[str, Any], devices: list[dict[str, Any]],
           extra: dict[str, Any] | None = None,
           components: dict[str, bool] | None = None) -> str:
    """The renderer takes the typed shapes; these tests write them as the API's JSON."""
    return render_status(Status.model_validate(status), _DEVICES.validate_python(devices),
                         extra, components)


def devices(*views: dict[str, Any]) -> list[dict[str, Any]]:
    checked = _DEVICES.validate_python(list(views) or [
        device("polder-1", "online", uptime=(50.0, 75.0, None), last_seen_ns=T0 + SEC // 4),
        device("polder-2", "offline", uptime=(0.0, 12.5, 90.0)),
        device("ap-2", "unknown", kind="wifi_ap", uptime=(None, None, None),
               last_seen_ns=None),
    ])
    return [d.model_dump(by_alias=True) for d in checked]


def parsed(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, /, **labels: str) -> float:
    found = [s.value for s in parsed(text) if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def names(text: str) -> set[str]:
    return {s.name for s in parsed(text)}


def labelled(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in parsed(text) if s.name == name}


@pytest.fixture
def text() -> str:
    return render(status(), devices())


# -- values --------------------------------------------------------------------------------------


def test_ingest_counts_are_counters_with_the_exact_values(text: str) -> None:
    assert value(text, "garden_gateway_written_total") == 1180
    assert value(text, "garden_gateway_received_total") == 1234
    assert value(text, "garden_gateway_macs_redacted_total") == 9
    assert value(text, "garden_gateway_dropped_uncommitted_total") == 0
    assert value(text, "garden_gateway_uptime_seconds") == 86400.5
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["garden_gateway_written"] == "counter"
    assert types["garden_gateway_uptime_seconds"] == "gauge"


def test_gateway_site_and_version_ride_only_on_the_info_gauge(text: str) -> None:
    assert value(text, "garden_gateway_info", gateway="gw-taman-01", site="taman-suropati",
                 version="0.1.0") == 1
    others = [s for s in parsed(text) if s.name != "garden_gateway_info"]
    assert not [s for s in others if "gateway" in s.labels or "version" in s.labels]


def test_device_up_is_1_online_0_offline_and_absent_while_unknown(text: str) -> None:
    assert value(text, "garden_gateway_device_up", device="polder-1", kind="polder",
                 site="taman-suropati") == 1
    assert value(text, "garden_gateway_device_up", device="polder-2", kind="polder",
                 site="taman-suropati") == 0
    up = {dict(k)["device"] for k in labelled(text, "garden_gateway_device_up")}
    assert up == {"polder-1", "polder-2"}


def test_each_device_has_one_state_sample_for_its_current_state(text: str) -> None:
    assert labelled(text, "garden_gateway_device_state") == {
        (("device", "ap-2"), ("kind", "wifi_ap"), ("site", "taman-suropati"),
         ("state", "unknown")): 1,
        (("device", "polder-1"), ("kind", "polder"), ("site", "taman-suropati"),
         ("state", "online")): 1,
        (("device", "polder-2"), ("kind", "polder"), ("site", "taman-suropati"),
         ("state", "offline")): 1,
    }
    assert value(text, "garden_gateway_devices", state="online") == 1
    assert value(text, "garden_gateway_devices", state="unknown") == 1


def test_devices_tally_counts_states_no_device_is_in_as_zero() -> None:
    text = render(status(), devices(device("polder-1", "online")))
    assert labelled(text, "garden_gateway_devices") == {
        (("state", "offline"),): 0, (("state", "online"),): 1, (("state", "unknown"),): 0,
        (("state", "unmonitored"),): 0}


def test_an_unmonitored_device_has_a_state_but_no_up_and_components_have_theirs() -> None:
    text = render(status(), devices(device("polder-1", "unmonitored")),
                  components={"bus:polder-bus": False, "serial:kebun": True})
    assert labelled(text, "garden_gateway_devices")[(("state", "unmonitored"),)] == 1
    assert "garden_gateway_device_up{" not in text  # neither up nor down
    assert labelled(text, "garden_gateway_component_up") == {
        (("component", "bus:polder-bus"),): 0, (("component", "serial:kebun"),): 1}


def test_a_device_without_kind_gets_an_empty_kind_label() -> None:
    text = render(status(), devices(device("thing", "online", kind=None)))
    assert value(text, "garden_gateway_device_up", device="thing", kind="",
                 site="taman-suropati") == 1


def test_every_device_family_carries_the_same_device_kind_and_site_labels(text: str) -> None:
    families = ("garden_gateway_device_up", "garden_gateway_device_state",
                "garden_gateway_device_last_seen_timestamp_seconds",
                "garden_gateway_device_uptime_ratio")
    for family in families:
        keys = {tuple(k for k, _ in labels) for labels in labelled(text, family)}
        assert keys, family
        assert all({"device", "kind", "site"} <= set(k) for k in keys), family


def test_uptime_is_a_ratio_per_window_and_absent_where_nothing_was_observed(text: str) -> None:
    where = {"kind": "polder", "site": "taman-suropati"}
    assert value(text, "garden_gateway_device_uptime_ratio", device="polder-1",
                 window="24h", **where) == 0.5
    assert value(text, "garden_gateway_device_uptime_ratio", device="polder-1",
                 window="7d", **where) == 0.75
    assert value(text, "garden_gateway_device_uptime_ratio", device="polder-2",
                 window="30d", **where) == 0.9
    windows = {(dict(k)["device"], dict(k)["window"])
               for k in labelled(text, "garden_gateway_device_uptime_ratio")}
    assert ("polder-1", "30d") not in windows
    assert not {w for w in windows if w[0] == "ap-2"}


def test_last_seen_is_unix_seconds_and_absent_when_never_seen(text: str) -> None:
    assert value(text, "garden_gateway_device_last_seen_timestamp_seconds",
                 device="polder-1", kind="polder", site="taman-suropati") == 1_700_000_000.25
    seen = {dict(k)["device"]
            for k in labelled(text, "garden_gateway_device_last_seen_timestamp_seconds")}
    assert seen == {"polder-1", "polder-2"}


def test_source_errors_are_counted_by_source_and_kind(text: str) -> None:
    assert labelled(text, "garden_gateway_source_errors_total") == {
        (("kind", "malformed"), ("source", "native")): 2,
        (("kind", "range"), ("source", "native")): 1,
    }
    assert value(text, "garden_gateway_source_messages_total", source="telegraf") == 234
    assert value(text, "garden_gateway_source_readings_total", source="native") == 990
    assert value(text, "garden_gateway_source_last_message_timestamp_seconds",
                 source="native") == 1_700_000_000.5
    assert labelled(text, "garden_gateway_source_last_message_timestamp_seconds").keys() == {
        (("source", "native"),)}


def test_serial_port_open_traffic_and_errors(text: str) -> None:
    assert value(text, "garden_gateway_serial_open", name="weather", port="/dev/ttyUSB0") == 1
    assert value(text, "garden_gateway_serial_bytes_total", name="weather") == 10240
    assert value(text, "garden_gateway_serial_lines_total", name="weather") == 300
    assert value(text, "garden_gateway_serial_readings_total", name="weather") == 290
    assert value(text, "garden_gateway_serial_errors_total", name="weather",
                 kind="checksum") == 4


def test_modbus_bus_slaves_and_blocks(text: str) -> None:
    assert value(text, "garden_gateway_modbus_open", bus="rs485-a", port="/dev/ttyUSB1") == 0
    assert value(text, "garden_gateway_modbus_polls_total", bus="rs485-a") == 100
    assert value(text, "garden_gateway_modbus_received_bytes_total", bus="rs485-a") == 5000
    assert value(text, "garden_gateway_modbus_errors_total", bus="rs485-a",
                 kind="port_gone") == 1
    assert labelled(text, "garden_gateway_modbus_slave_up") == {
        (("bus", "rs485-a"), ("device", "polder-1"), ("unit", "1")): 1,
        (("bus", "rs485-a"), ("device", "polder-2"), ("unit", "2")): 0,
    }
    assert value(text, "garden_gateway_modbus_slave_state", bus="rs485-a", device="pump-3",
                 unit="3", state="unknown") == 1
    assert value(text, "garden_gateway_modbus_slave_errors_total", bus="rs485-a",
                 device="polder-2", kind="crc") == 1
    assert value(text, "garden_gateway_modbus_block_errors_total", bus="rs485-a",
                 device="polder-2", block="holding@0", kind="timeout") == 5


def test_alerts_per_target_and_overall(text: str) -> None:
    assert value(text, "garden_gateway_alerts_sent_total", target="ops-telegram",
                 kind="telegram") == 12
    assert value(text, "garden_gateway_alerts_failed_total", target="ops-telegram",
                 kind="telegram") == 2
    assert value(text, "garden_gateway_alerts_dropped_total", target="ops-telegram",
                 kind="telegram") == 1
    assert value(text, "garden_gateway_alerts_pending", target="hook", kind="webhook") == 0
    assert value(text, "garden_gateway_alerts_suppressed_total") == 3
    assert value(text, "garden_gateway_alerts_down") == 2


def test_alert_targets_read_the_same_after_a_json_round_trip(text: str) -> None:
    snapshot = status()
    snapshot["alerts"] = {**snapshot["alerts"], "targets": list(snapshot["alerts"]["targets"])}
    assert render(snapshot, devices()) == text


def test_mqtt_and_influxdb_state_is_a_labelled_gauge(text: str) -> None:
    assert value(text, "garden_gateway_mqtt_state", state="connected") == 1
    assert value(text, "garden_gateway_mqtt_connected") == 1
    assert value(text, "garden_gateway_mqtt_disconnects_total") == 2
    assert value(text, "garden_gateway_mqtt_unacknowledged") == 7
    assert value(text, "garden_gateway_influx_state", state="backoff") == 1
    assert value(text, "garden_gateway_influx_batches_total") == 120
    assert len(labelled(text, "garden_gateway_influx_state")) == 1


def test_none_values_have_no_sample_and_no_family(text: str) -> None:
    for name in ("garden_gateway_spool_oldest_unsent_age_seconds",
                 "garden_gateway_influx_connected",
                 "garden_gateway_influx_last_success_timestamp_seconds",
                 "garden_gateway_influx_next_attempt_seconds"):
        assert name not in names(text)
        assert name not in text


def test_known_values_appear_when_they_are_known() -> None:
    base = status()
    text = render(status(
        influx={**base["influx"], "connected": True, "last_success_ns": T0 + SEC // 8,
                "next_attempt_in_s": 2.5},
        spool={**base["spool"], "oldest_unsent_age_s": 12.25},
    ), devices())
    assert value(text, "garden_gateway_influx_connected") == 1
    assert value(text, "garden_gateway_influx_last_success_timestamp_seconds") == (
        1_700_000_000.125)
    assert value(text, "garden_gateway_influx_next_attempt_seconds") == 2.5
    assert value(text, "garden_gateway_spool_oldest_unsent_age_seconds") == 12.25


def test_no_sample_is_nan_even_when_the_snapshot_holds_one() -> None:
    base = status()
    text = render(status(spool={**base["spool"], "oldest_unsent_age_s": math.nan},
                         influx={**base["influx"], "next_attempt_in_s": math.inf}),
                  devices(device("polder-1", "online", uptime=(math.nan, 50.0, None))))
    values = [s.value for s in parsed(text)]
    assert values
    assert all(math.isfinite(v) for v in values)
    assert "NaN" not in text
    assert "garden_gateway_spool_oldest_unsent_age_seconds" not in text
    assert labelled(text, "garden_gateway_device_uptime_ratio") == {
        (("device", "polder-1"), ("kind", "polder"), ("site", "taman-suropati"),
         ("window", "7d")): 0.5}


# -- the format ----------------------------------------------------------------------------------


def test_quote_backslash_and_newline_in_a_label_round_trip() -> None:
    odd = 'pump "A"\\ 2\nline'
    text = render(status(), devices(device(odd, "online", site='taman "baru"')))
    assert r'device="pump \"A\"\\ 2\nline"' in text
    assert value(text, "garden_gateway_device_up", device=odd, kind="polder",
                 site='taman "baru"') == 1


def test_every_family_has_one_help_and_one_type_before_its_samples(text: str) -> None:
    lines = text.splitlines()
    helps = [line.split(" ", 3)[2] for line in lines if line.startswith("# HELP ")]
    types = [line.split(" ", 3)[2] for line in lines if line.startswith("# TYPE ")]
    assert helps == types
    assert len(set(helps)) == len(helps)
    current = None
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            current = line.split(" ", 3)[2]
            assert lines[i + 1].startswith(f"# TYPE {current} ")
            assert lines[i + 2].startswith(current)
        elif not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] == current
    families = list(text_string_to_metric_families(text))
    assert all(f.documentation and f.type in ("counter", "gauge") for f in families)
    assert all(n.startswith("garden_gateway_") for n in helps)


def test_counters_end_in_total(text: str) -> None:
    types = [line.split(" ") for line in text.splitlines() if line.startswith("# TYPE ")]
    counters = [t[2] for t in types if t[3] == "counter"]
    assert "garden_gateway_written_total" in counters
    assert all(name.endswith("_total") for name in counters)
    assert not [t[2] for t in types if t[3] == "gauge" and t[2].endswith("_total")]


def test_samples_are_sorted_and_the_text_does_not_depend_on_input_order(text: str) -> None:
    assert render(status(), list(reversed(devices()))) == text
    families = list(text_string_to_metric_families(text))
    for f in families:
        keys = [tuple(s.labels.values()) for s in f.samples]
        assert keys == sorted(keys), f.name


def test_output_ends_with_exactly_one_newline(text: str) -> None:
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    assert "\n\n" not in text


def test_the_media_type_is_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_the_renderer_imports_only_the_standard_library() -> None:
    # And the typed shapes it renders (pure data, no I/O).
    source = Path(gateway.web.metrics.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module if node.module.startswith("gateway")
                         else node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "math", "re", "typing",
                        "gateway.core.status"}


# -- extra ---------------------------------------------------------------------------------------


def test_extra_sections_render_their_flat_numbers_as_gauges(text: str) -> None:
    extra = {
        "events": {"clients": 2, "sent": 10, "dropped": 0},
        "history": {"rows": 5, "fill": 0.25, "ok": True, "missing": None, "text": "x",
                    "nested": {"a": 1}, "broken": math.nan},
        "http": None,
        "odd-section": {"a.b": 7},
    }
    rendered = render(status(), devices(), extra)
    assert value(rendered, "garden_gateway_events_clients") == 2
    assert value(rendered, "garden_gateway_events_dropped_total") == 0
    assert value(rendered, "garden_gateway_history_fill") == 0.25
    assert value(rendered, "garden_gateway_history_ok") == 1
    assert value(rendered, "garden_gateway_odd_section_a_b") == 7
    assert {n for n in names(rendered) if n.startswith("garden_gateway_history_")} == {
        "garden_gateway_history_rows", "garden_gateway_history_fill",
        "garden_gateway_history_ok"}
    types = {f.name: f.type for f in text_string_to_metric_families(rendered)}
    assert types["garden_gateway_events_clients"] == "gauge"
    assert types["garden_gateway_odd_section_a_b"] == "gauge"
    assert rendered.startswith(text.rstrip("\n"))


def test_counts_since_start_in_extra_are_counters_named_total() -> None:
    extra = {
        "events": {"clients": 2, "connections": 4, "published": 9, "sent": 10, "dropped": 1,
                   "refused": 0},
        "history": {"rows": 5, "flushes": 3, "flush_failures": 1, "skipped_old": 0,
                    "skipped_future": 0, "refused_series": 0, "refused_buckets": 0,
                    "lost_buckets": 2},
        "watchdog": {"alive": 1, "skips": 6},
        "clock": {"held_rows": 7, "held": 8, "released": 5, "kept_apart": 0,
                  "held_evicted": 0, "refused_time": 1},
    }
    rendered = render(status(), devices(), extra)
    samples = {s.name: (f.type, s.value) for f in text_string_to_metric_families(rendered)
               for s in f.samples}
    for section, values in extra.items():
        for key, number in values.items():
            counter = f"garden_gateway_{section}_{key}_total"
            if counter in samples:
                assert samples[counter] == ("counter", number), counter
                assert f"garden_gateway_{section}_{key}" not in samples
            else:
                assert samples[f"garden_gateway_{section}_{key}"] == ("gauge", number)
    gauges = {n for n, (kind, _) in samples.items() if kind == "gauge" and n.startswith(
        ("garden_gateway_events_", "garden_gateway_history_", "garden_gateway_watchdog_",
         "garden_gateway_clock_"))}
    assert gauges == {"garden_gateway_events_clients", "garden_gateway_history_rows",
                      "garden_gateway_watchdog_alive", "garden_gateway_clock_held_rows"}


def test_extra_never_redefines_a_family_already_rendered(text: str) -> None:
    rendered = render(status(), devices(), {
        "spool": {"rows": 99},            # garden_gateway_spool_rows, a gauge above
        "mqtt": {"connects": 99},         # the family of garden_gateway_mqtt_connects_total
        "influx": {"batches_total": 99},  # the counter itself
        "a": {"b_c": 1}, "a_b": {"c": 2},  # one name from two sections: the first stands
    })
    assert value(rendered, "garden_gateway_spool_rows") == 42
    assert value(rendered, "garden_gateway_mqtt_connects_total") == 3
    assert value(rendered, "garden_gateway_influx_batches_total") == 120
    assert "garden_gateway_mqtt_connects " not in rendered
    assert value(rendered, "garden_gateway_a_b_c") == 1


def test_no_extra_is_the_same_as_an_empty_one(text: str) -> None:
    assert render(status(), devices(), {}) == text
    assert render(status(), devices(), {"events": {}}) == text


# -- properties ----------------------------------------------------------------------------------

specials = st.text(st.sampled_from(list('\\"\n\r{}=, #\t\x00\u2028\x85é')), max_size=12)
label_text = st.one_of(st.text(), specials)


@given(device_id=label_text, kind=label_text, site=label_text, gateway_id=label_text)
@settings(max_examples=300, deadline=None)
def test_any_label_text_parses_back_to_the_same_value(
    device_id: str, kind: str, site: str, gateway_id: str,
) -> None:
    base = status()
    snapshot = {**base, "gateway": {**base["gateway"], "id": gateway_id}}
    text = render(snapshot, [device(device_id, "offline", kind=kind, site=site)])
    assert value(text, "garden_gateway_device_up", device=device_id, kind=kind, site=site) == 0
    assert value(text, "garden_gateway_device_uptime_ratio", device=device_id, kind=kind,
                 site=site, window="24h") == 1
    assert value(text, "garden_gateway_info", gateway=gateway_id, site="taman-suropati",
                 version="0.1.0") == 1


numbers = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=3))


@given(extra=st.dictionaries(label_text, st.one_of(
    st.none(), numbers, st.dictionaries(label_text, numbers, max_size=4)), max_size=4))
@settings(max_examples=200, deadline=None)
def test_any_extra_gives_a_valid_exposition(extra: dict[str, Any]) -> None:
    text = render(status(), devices(), extra)
    families = list(text_string_to_metric_families(text))
    helps = [line.split(" ", 3)[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps)) == len(families)
    assert all(math.isfinite(s.value) for f in families for s in f.samples)
    assert value(text, "garden_gateway_written_total") == 1180
