"""`garden-gateway devices`: one broker account per device, the ACL, and the migration.

The CLI writes the password, accounts and ACL files; a real private Mosquitto (2.0) reads them.
What the broker refuses is shown the way a gateway sees it: a subscriber with the gateway's
own account never gets the forbidden message, while a legitimate one published after it does
(the broker routes a QoS 1 message before it acknowledges it, so that orders the check without
sleeping). Reloads are SIGHUP to the private broker (no systemd here).
"""

from __future__ import annotations

import asyncio
import fcntl
import grp
import json
import os
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import validate_raw
from gateway.ops import accounts as acc
from gateway.ops.cli import main
from gateway.ops.doctor import SKIPPABLE, Options, run_doctor
from gateway.ops.doctor.accounts import check_accounts
from gateway.park.registry import Device, Registry
from gateway.testing.stack import PrivateMosquitto, find_executable, free_port
from tests.conftest import gateway_in_process, until, wait_for

SITE = "taman-uji"
GW_PASSWORD = "gateway-password-0123456789"


# -- helpers ---------------------------------------------------------------------------------


def park_config(tmp_path: Path, *, mqtt_port: int = 1883, reload: str = "none",
                devices: tuple[str, ...] = ("polder-1", "kebun-1", "ap-1"),
                **extra: Any) -> Path:
    broker = tmp_path / "broker"
    broker.mkdir(exist_ok=True)
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "gateway": {"id": "gw-uji", "site": SITE},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "username": "garden-gateway",
                 "password": GW_PASSWORD, "client_id": "gw-uji", "reconnect_min_s": 0.1,
                 "reconnect_max_s": 0.5},
        "broker": {"accounts_file": str(tmp_path / "etc" / "broker-accounts.yaml"),
                   "password_file": str(broker / "garden.passwd"),
                   "acl_file": str(broker / "garden.acl"),
                   "enforce_file": str(broker / "conf.d" / "garden-acl.conf"),
                   "reload": reload, "pid_file": str(broker / "mosquitto.pid")},
        "subscriptions": [
            {"name": "native", "topic": "garden/+/+/telemetry", "format": "native"},
            {"name": "ap", "topic": "collectd/#", "format": "collectd"},
            {"name": "telegraf", "topic": "telegraf/#", "format": "influx"},
        ],
        "devices": [{"id": d} for d in devices],
    }
    cfg.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def config_of(path: Path) -> Any:
    return validate_raw(yaml.safe_load(path.read_text()), env={}, base=path.parent).config


def files_of(path: Path) -> acc.Files:
    return acc.Files.of(config_of(path).broker)


def devices(config: Path, *args: str, stdin: str | None = None,
            capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
    """`garden-gateway devices ...` in this process; (exit code, stdout, stderr)."""
    if stdin is not None:
        import io
        import sys
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(["devices", args[0], "--config", str(config), *args[1:]])
    finally:
        if stdin is not None:
            sys.stdin = old
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def password_in(out: str, account: str) -> str:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"password for {account}: "))
    return line.split(": ", 1)[1]


class Client:
    """An MQTT 5 client with one account: connect, publish QoS 1 and get the PUBACK's reason."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.connack: ReasonCode | None = None
        self.acks: dict[int, ReasonCode] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        with self._cond:
            assert self._cond.wait_for(lambda: self.connack is not None, 10), "no CONNACK"

    def _on_connect(self, c: Any, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        with self._cond:
            self.connack = reason
            self._cond.notify_all()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: ReasonCode, p: Any) -> None:
        with self._cond:
            self.acks[mid] = reason
            self._cond.notify_all()

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str = b"1") -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self.acks, 10), f"no PUBACK {topic}"
            return self.acks[info.mid]

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10)

    def messages_seen(self) -> list[tuple[str, bytes]]:
        with self._cond:
            return list(self.messages)

    def wait_topic(self, topic: str) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: any(t == topic for t, _ in self.messages),
                                       10), f"{topic} never arrived: {self.messages}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_once(port: int, user: str, password: str, topic: str,
                 payload: bytes | str = b"1") -> ReasonCode:
    """One connection, one QoS 1 publish (Mosquitto 2.0 drops the connection after a denied
    publish), its PUBACK reason."""
    client = Client(port, user, password, f"pub-{user}")
    try:
        assert client.connack is not None
        assert not client.connack.is_failure, client.connack
        return client.publish(topic, payload)
    finally:
        client.close()


def login(port: int, user: str, password: str) -> ReasonCode:
    client = Client(port, user, password, f"login-{user}")
    client.close()
    assert client.connack is not None
    return client.connack


def wait_reloaded(broker: PrivateMosquitto, offset: int) -> None:
    """The broker handles the next network event after its reload (one thread)."""
    wait_for(lambda: "Reloading config." in broker.log_path.read_text()[offset:], timeout=10,
             what="Mosquitto's 'Reloading config.'")


@pytest.fixture
def park(tmp_path: Path) -> Path:
    return park_config(tmp_path)


# -- the pieces ------------------------------------------------------------------------------


def test_hash_is_mosquittos_7_format_and_reads_mosquitto_passwds_own(tmp_path: Path) -> None:
    entry = acc.hash_password("s3cret-password")
    algo, iterations, salt, digest = entry.split("$")[1:]
    assert (algo, iterations, len(salt), len(digest)) == ("7", "101", 16, 88)
    assert acc.verify_password("s3cret-password", entry)
    assert not acc.verify_password("s3cret-passwore", entry)
    assert acc.hash_password("x" * 8) != acc.hash_password("x" * 8), "a new salt each time"
    made = tmp_path / "passwd"
    made.touch()
    subprocess.run([find_executable("mosquitto_passwd"), "-b", str(made), "dev", "their-pw"],
                   check=True, capture_output=True)
    theirs = made.read_text().strip().split(":", 1)[1]
    assert acc.verify_password("their-pw", theirs)


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("tele/a/#", "tele/b/#", False), ("tele/+/#", "tele/b/SENSOR", True),
    ("a/#", "a", True), ("a/b", "a/b/c", False), ("+/status", "kebun/status", True),
    ("garden/s/x/#", "garden/+/+/state", True), ("vendor/weather/+", "vendor/#", True),
])
def test_filters_overlap(a: str, b: str, overlap: bool) -> None:
    assert acc.filters_overlap(a, b) is overlap
    assert acc.filters_overlap(b, a) is overlap


@pytest.mark.parametrize(("kind", "allowed", "refused"), [
    ("native", ["garden/s/d/telemetry", "garden/s/d/status"],
     ["garden/s/d/state", "garden/s/other/telemetry", "garden/s/gateway/gw/status",
      "garden/s/bridge/connection", "garden/s/summary", "garden/t/d/telemetry"]),
    ("tasmota", ["tele/d/SENSOR", "tele/d/LWT", "stat/d/RESULT"],
     ["tele/other/SENSOR", "cmnd/d/POWER", "garden/s/d/state"]),
    ("esphome", ["d/sensor/t/state", "d/status"], ["other/status", "garden/s/d/state"]),
    ("collectd", ["collectd/d/interface-wlan0/if_octets"], ["collectd/e/x", "tele/d/x"]),
])
def test_what_each_kind_may_publish(kind: acc.Kind, allowed: list[str],
                                    refused: list[str]) -> None:
    account = acc.Account("d", kind, "s" if kind == "native" else None)
    assert [t for t in allowed if not acc.may_publish(account, t)] == []
    assert [t for t in refused if acc.may_publish(account, t)] == []


# -- the command line: files, modes, bad input -----------------------------------------------


def test_add_writes_password_accounts_and_acl_and_prints_the_password_once(
        park: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = files_of(park)
    code, out, _ = devices(park, "add", "polder-1", "--kind", "native", capsys=capsys)
    assert code == 0
    password = password_in(out, "polder-1")
    assert len(password) >= 20
    assert out.count(password) == 1
    entry = acc.PasswordFile.read(files.passwd).users()["polder-1"]
    assert acc.verify_password(password, entry)
    assert password not in files.passwd.read_text() + files.accounts.read_text()
    assert yaml.safe_load(files.accounts.read_text()) == {
        "accounts": {"polder-1": {"kind": "native", "site": SITE}}}
    acl = files.acl.read_text()
    assert "user polder-1\n" in acl
    assert f"topic readwrite garden/{SITE}/polder-1/#\n" in acl
    assert "topic deny garden/+/+/state\n" in acl
    assert "pattern" not in acl
    for path in (files.passwd, files.accounts, files.acl):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert list(files.acl.parent.glob(".*.tmp")) == []
    # `list` shows it, with the gateway-less config noted.
    code, out, _ = devices(park, "list", capsys=capsys)
    assert code == 0
    assert "polder-1" in out
    assert f"garden/{SITE}/polder-1/#" in out
    assert "NOT enforced" in out


def test_rewrite_is_atomic_and_keeps_mode_and_group(
        park: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = files_of(park)
    assert devices(park, "add", "kebun-1", "--kind", "esphome", capsys=capsys)[0] == 0
    mine = [g for g in (os.getgroups() if os.geteuid() else [g.gr_gid for g in grp.getgrall()])
            if g != os.getegid()]
    if not mine:
        pytest.skip("needs a second group to give the files")
    group = mine[0]
    for path in (files.acl, files.passwd):
        os.chown(path, -1, group)
        path.chmod(0o604)
    inode = files.acl.stat().st_ino
    assert devices(park, "add", "ap-1", "--kind", "collectd", capsys=capsys)[0] == 0
    for path in (files.acl, files.passwd):
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o604, group), path
    assert files.acl.stat().st_ino != inode, "a new file renamed over the old one"
    assert "user ap-1" in files.acl.read_text()
    assert "user kebun-1" in files.acl.read_text()
    # Nothing to change: nothing written (same inode).
    inode = files.acl.stat().st_ino
    code, _out, _ = devices(park, "sync", capsys=capsys)
    assert code == 0
    assert "garden-gateway" in files.acl.read_text()
    inode2 = files.acl.stat().st_ino
    assert devices(park, "sync", capsys=capsys)[:2] == (0, "unchanged (the files already say "
                                                          "this)\n")
    assert files.acl.stat().st_ino == inode2 != inode


@pytest.mark.parametrize("bad", [
    "gateway", "bridge", "summary", "tele", "stat", "Garden", "collectd", "telegraf", "$SYS",
    "garden-gateway", "gw-uji", "a/b", "a+b", "#", "+", "kebun 1", "x:y", "_lead", "",
])
def test_reserved_and_malformed_ids_are_refused_with_exit_2(
        park: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = devices(park, "add", bad, "--kind", "esphome", capsys=capsys)
    assert code == 2
    assert ("reserved" in err) or ("an id is 1 to 64" in err), err
    assert "password for" not in out
    assert not files_of(park).accounts.exists()


@pytest.mark.parametrize(("args", "why"), [
    (["tg", "--kind", "topics"], "needs at least one --topic"),
    (["tg", "--kind", "topics", "--topic", "#"], "covers every namespace"),
    (["tg", "--kind", "topics", "--topic", "+/status"], "covers every namespace"),
    (["tg", "--kind", "topics", "--topic", "tele/+/SENSOR"], "namespace of a kind"),
    (["tg", "--kind", "topics", "--topic", "garden/taman-uji/polder-1/telemetry"],
     "namespace of a kind"),
    (["tg", "--kind", "topics", "--topic", "a/#/b"], "'#' only as the whole last level"),
    (["tg", "--kind", "esphome", "--topic", "x y"], "no spaces"),
])
def test_bad_topics_are_refused(park: Path, args: list[str], why: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = devices(park, "add", *args, capsys=capsys)
    assert code == 2, err
    assert why in err, err


def test_no_device_may_take_another_accounts_topics(
        park: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert devices(park, "add", "weather", "--kind", "topics", "--topic", "wx/#",
                   capsys=capsys)[0] == 0
    # An ESPHome id is a first level: "wx" would own wx/#, the weather account's topics.
    code, _, err = devices(park, "add", "wx", "--kind", "esphome", capsys=capsys)
    assert code == 2
    assert "reserved" in err
    code, _, err = devices(park, "add", "other", "--kind", "topics", "--topic", "wx/+/t",
                           capsys=capsys)
    assert code == 2
    assert "overlaps wx/# of account 'weather'" in err
    code, _, err = devices(park, "add", "weather", "--kind", "esphome", capsys=capsys)
    assert code == 2
    assert "already has an account" in err


def test_password_from_a_file_or_stdin_and_bad_ones(
        park: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = files_of(park)
    secret = tmp_path / "pw"
    secret.write_text("from-a-file-pw\n")
    code, out, _ = devices(park, "add", "kebun-1", "--kind", "tasmota", "--password-file",
                           str(secret), capsys=capsys)
    assert code == 0
    assert "password for" not in out
    assert "from-a-file-pw" not in out
    assert acc.verify_password("from-a-file-pw",
                               acc.PasswordFile.read(files.passwd).users()["kebun-1"])
    code, out, _ = devices(park, "add", "ap-1", "--kind", "collectd", "--password-stdin",
                           stdin="from-stdin-pw\n", capsys=capsys)
    assert code == 0
    assert acc.verify_password("from-stdin-pw",
                               acc.PasswordFile.read(files.passwd).users()["ap-1"])
    code, _, err = devices(park, "add", "polder-1", "--kind", "native", "--password-stdin",
                           stdin="short\n", capsys=capsys)
    assert code == 2
    assert "at least 8" in err


def test_remove_and_a_broken_accounts_file(park: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    files = files_of(park)
    assert devices(park, "add", "kebun-1", "--kind", "esphome", capsys=capsys)[0] == 0
    assert devices(park, "add", "ap-1", "--kind", "collectd", capsys=capsys)[0] == 0
    code, out, _ = devices(park, "remove", "kebun-1", capsys=capsys)
    assert code == 0
    assert "can no longer log in" in out
    assert "kebun-1" not in files.passwd.read_text() + files.acl.read_text()
    assert "ap-1" in files.passwd.read_text()
    assert devices(park, "remove", "kebun-1", capsys=capsys)[0] == 2
    files.accounts.write_text("accounts:\n  x: {kind: wizard}\n")
    code, _, err = devices(park, "add", "polder-1", "--kind", "native", capsys=capsys)
    assert code == 2
    assert "accounts.x.kind: one of native" in err
    files.accounts.write_text("accounts: [\n")
    code, _, err = devices(park, "list", capsys=capsys)
    assert code == 2
    assert "not valid YAML" in err


def test_import_keeps_hashes_guesses_or_is_told_kinds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = park_config(tmp_path, devices=("polder-1", "ap-1"))
    files = files_of(config)
    files.passwd.parent.mkdir(parents=True, exist_ok=True)
    legacy = {"garden-gateway": acc.hash_password(GW_PASSWORD),
              "ap-1": acc.hash_password("ap-password"),
              "polder-1": acc.hash_password("polder-password"),
              "gateway": acc.hash_password("nasty-password")}
    files.passwd.write_text("".join(f"{u}:{h}\n" for u, h in legacy.items()))
    # ap-1 was heard as a wifi_ap: collectd is guessed.
    registry = Registry(tmp_path / "data" / "state.sqlite3")
    registry.save([Device("ap-1", "ap-1", "wifi_ap", SITE, None, 60, "", "config",
                          last_seen_ns=1)])
    registry.close()
    code, out, _ = devices(config, "import", capsys=capsys)
    assert code == 1, "polder-1's kind is not known"
    assert "imported  garden-gateway (gateway)" in out
    assert "imported  ap-1 (collectd)" in out
    assert "skipped   polder-1: its kind is not known" in out
    assert "skipped   gateway: 'gateway' is reserved" in out
    code, out, _ = devices(config, "import", "--kind", "polder-1=native", capsys=capsys)
    assert code == 1
    assert "imported  polder-1 (native)" in out
    users = acc.PasswordFile.read(files.passwd).users()
    assert users["polder-1"] == legacy["polder-1"]
    assert users["ap-1"] == legacy["ap-1"]
    accounts = acc.load_accounts(files.accounts)
    assert {a.id: a.kind for a in accounts.accounts.values()} == {
        "garden-gateway": "gateway", "ap-1": "collectd", "polder-1": "native"}
    assert files.acl.read_text() == accounts.render_acl()
    assert devices(config, "import", "--kind", "wizard", capsys=capsys)[0] == 2


def test_doctor_lists_the_publishers_the_acl_would_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = park_config(tmp_path)
    registry = Registry(tmp_path / "data" / "state.sqlite3")
    registry.save([
        Device("polder-1", "polder-1", "polder", SITE, None, 60, "", "config", last_seen_ns=1),
        Device("rogue-9", "rogue-9", None, SITE, None, 60, "", "discovered", last_seen_ns=1),
        Device("kebun-1", "kebun-1", None, "taman-lain", None, 60, "", "config",
               last_seen_ns=1),
        Device("never", "never", None, SITE, None, 60, "", "config"),
    ])
    registry.close()
    assert devices(config, "sync", capsys=capsys)[0] == 0
    files_of(config).passwd.write_text(f"garden-gateway:{acc.hash_password(GW_PASSWORD)}\n")
    for device, kind in (("polder-1", "native"), ("kebun-1", "native"), ("old-ap", "collectd")):
        assert devices(config, "add", device, "--kind", kind, capsys=capsys)[0] == 0
    results = {r.name: r for r in check_accounts(config_of(config))}
    assert results["ACL file"].verdict == "OK"
    assert results["passwords"].verdict == "OK"
    assert results["ACL enforced"].verdict == "WARN"
    assert results["accounts without a device"].details == ("old-ap",)
    publishers = results["publishers"]
    assert publishers.verdict == "WARN"
    assert "would refuse 3 publishers" in publishers.found
    details = "\n".join(publishers.details)
    assert "device rogue-9 (heard, discovered) has no account" in details
    assert "device kebun-1 publishes for site taman-lain" in details
    assert "subscription telegraf (telegraf/#, influx): no account" in details
    assert "polder-1" not in details
    assert "never" not in details
    # `enforce` refuses while doctor lists any; a hand-edited ACL is caught.
    code, out, err = devices(config, "enforce", capsys=capsys)
    assert code == 1
    assert "would refuse: device rogue-9" in out
    assert "not enforced" in err
    files = files_of(config)
    assert not files.enforce.exists()
    files.acl.write_text(files.acl.read_text() + "user rogue-9\ntopic write #\n")
    results = {r.name: r for r in check_accounts(config_of(config))}
    assert results["ACL file"].verdict == "FAIL"


# -- the real broker -------------------------------------------------------------------------


@pytest.fixture
def enforced(tmp_path: Path, capsys: pytest.CaptureFixture[str]
             ) -> Iterator[tuple[Path, PrivateMosquitto, dict[str, str]]]:
    """A park whose accounts the CLI made, and a private Mosquitto enforcing its ACL."""
    config = park_config(tmp_path, reload="pid_file")
    files = files_of(config)
    assert devices(config, "sync", capsys=capsys)[0] == 0
    files.passwd.write_text(f"garden-gateway:{acc.hash_password(GW_PASSWORD)}\n")
    passwords = {"garden-gateway": GW_PASSWORD}
    for device, kind, extra in (("polder-1", "native", []), ("kebun-1", "native", []),
                                ("tas-1", "tasmota", []), ("esp-1", "esphome", []),
                                ("ap-1", "collectd", []),
                                ("telegraf-ap", "topics", ["--topic", "telegraf/#"])):
        code, out, _ = devices(config, "add", device, "--kind", kind, *extra, "--no-reload",
                               capsys=capsys)
        assert code == 0
        passwords[device] = password_in(out, device)
    with PrivateMosquitto(tmp_path / "mosquitto", password_file=files.passwd,
                          acl_file=files.acl) as broker:
        assert broker.pid is not None
        config_of(config).broker.pid_file.write_text(f"{broker.pid}\n")
        yield config, broker, passwords


def test_the_broker_lets_each_device_publish_only_on_its_own_topics(
        enforced: tuple[Path, PrivateMosquitto, dict[str, str]]) -> None:
    _, broker, pw = enforced
    gateway = Client(broker.port, "garden-gateway", GW_PASSWORD, "gw-watch")
    try:
        gateway.subscribe("#")
        refused = [
            ("kebun-1", f"garden/{SITE}/polder-1/telemetry"),  # speaking for the polder
            ("kebun-1", f"garden/{SITE}/kebun-1/state"),       # the gateway's computed state
            ("kebun-1", f"garden/{SITE}/polder-1/state"),
            ("kebun-1", f"garden/{SITE}/gateway/gw-uji/status"),
            ("kebun-1", f"garden/{SITE}/bridge/connection"),
            ("kebun-1", f"garden/{SITE}/summary"),
            ("tas-1", "tele/tas-2/SENSOR"), ("tas-1", f"garden/{SITE}/tas-1/telemetry"),
            ("esp-1", "kebun-1/sensor/t/state"), ("ap-1", "collectd/ap-2/x/y"),
            ("telegraf-ap", "collectd/ap-1/x/y"), ("polder-1", "telegraf/x"),
        ]
        for user, topic in refused:
            reason = publish_once(broker.port, user, pw[user], topic, f"{user} {topic}")
            assert reason.getName() == "Not authorized", (user, topic, reason)
        allowed = [
            ("polder-1", f"garden/{SITE}/polder-1/telemetry"),
            ("polder-1", f"garden/{SITE}/polder-1/status"),
            ("tas-1", "tele/tas-1/SENSOR"), ("tas-1", "stat/tas-1/RESULT"),
            ("esp-1", "esp-1/sensor/t/state"), ("ap-1", "collectd/ap-1/x/y"),
            ("telegraf-ap", "telegraf/ap-1"),
            ("garden-gateway", f"garden/{SITE}/polder-1/state"),
        ]
        for user, topic in allowed:
            reason = publish_once(broker.port, user, pw[user], topic, f"{user} {topic}")
            assert not reason.is_failure, (user, topic, reason)
        # Routed before acknowledged: once the last allowed one is here, all are.
        gateway.wait_topic(allowed[-1][1])
        got = gateway.messages_seen()
        assert [(u, t) for u, t in allowed if (t, f"{u} {t}".encode()) not in got] == []
        assert [(u, t) for u, t in refused if (t, f"{u} {t}".encode()) in got] == []
        assert login(broker.port, "polder-1", "not-its-password").getName() == "Not authorized"
    finally:
        gateway.close()


def test_remove_and_sighup_make_the_broker_refuse_the_account(
        enforced: tuple[Path, PrivateMosquitto, dict[str, str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    config, broker, pw = enforced
    assert not login(broker.port, "esp-1", pw["esp-1"]).is_failure
    offset = broker.log_path.stat().st_size
    code, out, _ = devices(config, "remove", "esp-1", capsys=capsys)
    assert code == 0
    assert f"SIGHUP sent to Mosquitto (pid {broker.pid})" in out
    wait_reloaded(broker, offset)
    assert login(broker.port, "esp-1", pw["esp-1"]).getName() == "Not authorized"
    assert not login(broker.port, "tas-1", pw["tas-1"]).is_failure, "the others stay"
    # A device added now can log in and publish at once.
    offset = broker.log_path.stat().st_size
    code, out, _ = devices(config, "add", "esp-2", "--kind", "esphome", capsys=capsys)
    assert code == 0
    wait_reloaded(broker, offset)
    assert not publish_once(broker.port, "esp-2", password_in(out, "esp-2"),
                            "esp-2/status").is_failure


def test_a_stale_pid_file_is_a_clear_failure(
        enforced: tuple[Path, PrivateMosquitto, dict[str, str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    config, _, _ = enforced
    config_of(config).broker.pid_file.write_text("not-a-pid\n")
    code, _out, err = devices(config, "remove", "ap-1", capsys=capsys)
    assert code == 1
    assert "cannot signal the broker" in err
    assert "ap-1" not in files_of(config).acl.read_text(), "the files are written anyway"


def _spool_lines(data_dir: Path) -> list[str]:
    path = data_dir / "spool.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in db.execute("SELECT line FROM spool ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


async def test_an_impersonation_never_reaches_the_gateways_spool(
        tmp_path: Path, enforced: tuple[Path, PrivateMosquitto, dict[str, str]]) -> None:
    config, broker, pw = enforced
    cfg = yaml.safe_load(config.read_text())
    cfg["mqtt"]["port"] = broker.port
    cfg.update({"influx": {"enabled": False}, "clock": {"require_sync": "no"},
                "spool": {"commit_interval_s": 0.02}, "shutdown_grace_s": 5,
                "api": {"host": "127.0.0.1", "port": free_port(),
                        "operator_token": "test-operator-token-0123456789"}})
    data = Path(cfg["data_dir"])
    async with gateway_in_process(tmp_path, cfg) as gateway:
        def both() -> None:
            # kebun-1 speaks for the polder (dropped), then for itself (delivered).
            forged = publish_once(broker.port, "kebun-1", pw["kebun-1"],
                                  f"garden/{SITE}/polder-1/telemetry",
                                  json.dumps({"level_cm": 999.0}))
            assert forged.getName() == "Not authorized"
            own = publish_once(broker.port, "kebun-1", pw["kebun-1"],
                               f"garden/{SITE}/kebun-1/telemetry",
                               json.dumps({"moisture_pct": 41.0}))
            assert not own.is_failure
        await asyncio.to_thread(both)
        await until(lambda: any(ln.startswith("garden_sensor,") and "device=kebun-1" in ln
                                for ln in _spool_lines(data)), 15)
        listing = await gateway.http.get("/api/v1/devices")
        assert listing.status_code == 200
        assert "kebun-1" in listing.text
    readings = [ln for ln in _spool_lines(data) if ln.startswith("garden_sensor,")]
    assert len(readings) == 1, readings
    assert "moisture_pct=41" in readings[0], readings
    assert "level_cm" not in listing.text
    assert "999" not in listing.text


def test_migration_at_a_running_park_import_doctor_enforce(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: one password file, no ACL, every device may publish anywhere. Then import,
    doctor, enforce; after: the same passwords work, each only on its own topics."""
    config = park_config(tmp_path, reload="pid_file", devices=("polder-1", "ap-1"))
    files = files_of(config)
    files.passwd.write_text("")
    tool = find_executable("mosquitto_passwd")
    for user, password in (("garden-gateway", GW_PASSWORD), ("ap-1", "ap-1-password"),
                           ("polder-1", "polder-1-password")):
        subprocess.run([tool, "-b", str(files.passwd), user, password], check=True)
    files.enforce.parent.mkdir(parents=True)
    with PrivateMosquitto(tmp_path / "mosquitto", password_file=files.passwd,
                          extra_conf=f"include_dir {files.enforce.parent}") as broker:
        assert broker.pid is not None
        config_of(config).broker.pid_file.write_text(f"{broker.pid}\n")
        forged = f"garden/{SITE}/polder-1/telemetry"
        assert not publish_once(broker.port, "ap-1", "ap-1-password", forged).is_failure
        code, out, _ = devices(config, "import", "--kind", "polder-1=native", "--kind",
                               "ap-1=collectd", capsys=capsys)
        assert code == 0
        assert "imported  polder-1 (native)" in out
        results = {r.name: r for r in check_accounts(config_of(config))}
        assert results["ACL enforced"].verdict == "WARN"
        assert "subscription telegraf" in "\n".join(results["publishers"].details)
        assert devices(config, "enforce", capsys=capsys)[0] == 1
        assert devices(config, "add", "telegraf-ap", "--kind", "topics", "--topic",
                       "telegraf/#", "--no-reload", capsys=capsys)[0] == 0
        assert {r.name: r.verdict for r in check_accounts(config_of(config))}[
            "publishers"] == "OK"
        offset = broker.log_path.stat().st_size
        code, out, _ = devices(config, "enforce", capsys=capsys)
        assert code == 0
        assert f"acl_file {files.acl}" in files.enforce.read_text()
        wait_reloaded(broker, offset)
        assert publish_once(broker.port, "ap-1", "ap-1-password",
                            forged).getName() == "Not authorized"
        assert not publish_once(broker.port, "ap-1", "ap-1-password",
                                "collectd/ap-1/x/y").is_failure
        assert not publish_once(broker.port, "polder-1", "polder-1-password",
                                forged).is_failure
        assert {r.name: r.verdict for r in check_accounts(config_of(config))}[
            "ACL enforced"] == "OK"


_LEVELS = st.sampled_from(["a", "b", "c"])


@given(st.lists(st.sampled_from(["a", "b", "+", "#"]), min_size=1, max_size=4),
       st.lists(st.sampled_from(["a", "b", "+", "#"]), min_size=1, max_size=4),
       st.lists(_LEVELS, min_size=1, max_size=5))
def test_filter_logic_agrees_with_paho_matching(f: list[str], g: list[str],
                                               topic: list[str]) -> None:
    """filter_covers and filters_overlap against paho's own topic_matches_sub."""
    first, second, concrete = "/".join(f), "/".join(g), "/".join(topic)
    assume(acc.valid_filter(first) is None and acc.valid_filter(second) is None)
    in_both = paho.topic_matches_sub(first, concrete) and paho.topic_matches_sub(second,
                                                                                concrete)
    if in_both:
        assert acc.filters_overlap(first, second)
    if acc.filter_covers(first, second) and paho.topic_matches_sub(second, concrete):
        assert paho.topic_matches_sub(first, concrete)
    assert acc.filter_covers(first, concrete) == paho.topic_matches_sub(first, concrete)


async def test_doctor_runs_the_accounts_check(tmp_path: Path) -> None:
    config = park_config(tmp_path)
    report = await run_doctor(config, Options(skip=frozenset(SKIPPABLE) - {"accounts"}),
                              env={})
    lines = [r for r in report.results if r.check == "accounts"]
    assert [(r.name, r.verdict) for r in lines] == [("broker accounts", "WARN")]
    assert "every device may publish anywhere" in lines[0].found
    assert "accounts" in report.text()


def test_import_from_another_password_file_and_one_run_at_a_time(
        park: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = files_of(park)
    legacy = tmp_path / "old.passwd"
    entry = acc.hash_password("kebun-1-password")
    legacy.write_text(f"kebun-1:{entry}\n")
    code, out, _ = devices(park, "import", "--from", str(legacy), "--kind", "esphome",
                           capsys=capsys)
    assert code == 0, out
    assert acc.PasswordFile.read(files.passwd).users() == {"kebun-1": entry}
    assert acc.load_accounts(files.accounts).accounts["kebun-1"].kind == "esphome"
    # Another run holds the lock: refused, nothing written.
    before = files.acl.read_text()
    folder = os.open(files.accounts.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        code, _, err = devices(park, "add", "ap-1", "--kind", "collectd", capsys=capsys)
    finally:
        os.close(folder)
    assert code == 2
    assert "another `garden-gateway devices` is changing" in err
    assert files.acl.read_text() == before


def test_the_bridge_still_carries_the_parks_states_under_the_acl(
        enforced: tuple[Path, PrivateMosquitto, dict[str, str]], tmp_path: Path) -> None:
    """The bridge (config/mosquitto-bridge.conf) publishes inside the broker, under no account:
    the ACL neither stops what it carries out nor its own bridge/connection topic."""
    config, _, pw = enforced
    files = files_of(config)
    with PrivateMosquitto(tmp_path / "central") as central:
        bridge = (f"connection central\naddress 127.0.0.1:{central.port}\ncleansession false\n"
                  f"notifications true\nnotification_topic garden/{SITE}/bridge/connection\n"
                  f"topic garden/{SITE}/+/state out 1\n")
        with PrivateMosquitto(tmp_path / "park", password_file=files.passwd,
                              acl_file=files.acl, extra_conf=bridge) as park:
            regency = Client(central.port, "regency", "unused", "regency")
            gateway = Client(park.port, "garden-gateway", GW_PASSWORD, "gw-bridge-watch")
            try:
                regency.subscribe("garden/#")
                gateway.subscribe(f"garden/{SITE}/bridge/#")
                gateway.wait_topic(f"garden/{SITE}/bridge/connection")
                forged = publish_once(park.port, "kebun-1", pw["kebun-1"],
                                      f"garden/{SITE}/polder-1/state", "forged")
                assert forged.getName() == "Not authorized"
                state = f"garden/{SITE}/polder-1/state"
                assert not gateway.publish(state, "online").is_failure
                regency.wait_topic(state)
                assert (state, b"forged") not in regency.messages_seen()
            finally:
                regency.close()
                gateway.close()
