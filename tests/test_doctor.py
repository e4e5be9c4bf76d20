"""``garden-gateway doctor`` against the real things: a private Mosquitto with a password, the
private InfluxDB 1.6.7, a pymodbus RTU slave bus and line sensors on pseudo-terminals, a
spool written by the gateway's own SpoolDB. Only what cannot run here is faked, and says so:
the clock's and systemd's answers (fake_*), and InfluxDB 2.x (a stub HTTP server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import serial
from paho.mqtt.enums import CallbackAPIVersion

from devices.modbus import Block, Register
from gateway.config import Config, validate_raw
from gateway.ops import doctor
from gateway.ops.doctor import ClockSources, CommandOutput, Result
from gateway.ops.simulate import block_config, pty_port
from gateway.store.spool import SpoolDB
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, free_port
from tests.conftest import ROOT, Publisher, write_config
from tests.modbus_peer import modbus_peer

USER, PASSWORD = "gateway", "kata-sandi-taman"


def raw_config(tmp_path: Path, *, mqtt_port: int | None = None, influx_url: str | None = None,
               database: str = "garden", **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "gateway": {"id": "gw-doc", "site": "taman-uji"},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port or free_port()},
        "influx": ({"url": influx_url, "database": database} if influx_url
                   else {"enabled": False}),
        "api": {"host": "127.0.0.1", "port": free_port()},
    }
    cfg.update(sections)
    return cfg


def config_of(tmp_path: Path, raw: dict[str, Any]) -> Config:
    return validate_raw(json.loads(json.dumps(raw)), env={}, base=tmp_path).config


def run_cli(tmp_path: Path, raw: dict[str, Any], *args: str,
            env: dict[str, str] | None = None,
            secrets_env: str = "") -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "gateway.yaml", raw)
    # Always a file of the test's own: the machine's /etc/garden-gateway must not count.
    env_file = tmp_path / "secrets.env"
    env_file.write_text(secrets_env, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.ops.doctor", "--config", str(config),
         "--env-file", str(env_file), "--timeout", "2", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env={**clean, **(env or {})},
    )


def line_of(out: str, start: str) -> str:
    found = [line for line in out.splitlines() if start in line]
    assert len(found) == 1, f"{start!r} in:\n{out}"
    return found[0]


def only(results: Sequence[Result], name: str) -> Result:
    found = [r for r in results if r.name.startswith(name)]
    assert len(found) == 1, results
    return found[0]


# -- broker ----------------------------------------------------------------------------------


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto(tmp_path / "mosquitto", username=USER, password=PASSWORD) as broker:
        yield broker


def test_broker_password_from_the_secrets_file_is_accepted_and_a_wrong_one_refused(
    tmp_path: Path, locked_broker: PrivateMosquitto,
) -> None:
    raw = raw_config(tmp_path, mqtt_port=locked_broker.port)
    raw["mqtt"]["username"] = USER
    skips = ("--skip", "influx", "--skip", "api", "--skip", "systemd", "--skip", "clock",
             "--skip", "disk")
    right = run_cli(tmp_path, raw, *skips,
                    secrets_env=f"# as systemd reads it\nGARDEN_GATEWAY_MQTT__PASSWORD="
                                f"'{PASSWORD}'\n")
    assert line_of(right.stdout, "broker 127.0.0.1").startswith("OK    broker 127.0.0.1:")
    assert f"as {USER}" in right.stdout
    assert right.returncode == 0, right.stdout
    # The shell's variable wins over the file's, as a technician trying a value expects.
    wrong = run_cli(tmp_path, raw, *skips, env={"GARDEN_GATEWAY_MQTT__PASSWORD": "salah"},
                    secrets_env=f"GARDEN_GATEWAY_MQTT__PASSWORD={PASSWORD}\n")
    line = line_of(wrong.stdout, "broker 127.0.0.1")
    assert line.startswith("FAIL  broker 127.0.0.1:")
    assert "not authorised" in line
    assert "GARDEN_GATEWAY_MQTT__PASSWORD in /etc/garden-gateway/secrets.env" in line
    assert wrong.returncode == 1


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_check_leaves_the_gateway_connected_and_reads_its_status(
    tmp_path: Path, locked_broker: PrivateMosquitto, protocol: str,
) -> None:
    raw = raw_config(tmp_path, mqtt_port=locked_broker.port)
    raw["mqtt"].update(username=USER, password=PASSWORD, protocol=protocol)
    cfg = config_of(tmp_path, raw)
    # Stands in for the running gateway: its client id, its retained birth message.
    gateway = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.mqtt_client_id)
    gateway.username_pw_set(USER, PASSWORD)
    dropped = threading.Event()
    gateway.on_disconnect = lambda *a: dropped.set()
    gateway.connect("127.0.0.1", locked_broker.port)
    gateway.loop_start()
    try:
        info = gateway.publish("garden/taman-uji/gateway/gw-doc/status", "online", qos=1,
                               retain=True)
        info.wait_for_publish(timeout=5)
        results = doctor.check_broker(cfg, 2.0)
        assert [r.verdict for r in results] == ["OK", "OK"], results
        assert "says online" in results[1].found
        assert not dropped.is_set(), "doctor's connection threw the gateway off"
    finally:
        gateway.disconnect()
        gateway.loop_stop()


def test_broker_without_a_status_warns_that_the_gateway_never_connected(
    tmp_path: Path, mosquitto: PrivateMosquitto,
) -> None:
    cfg = config_of(tmp_path, raw_config(tmp_path, mqtt_port=mosquitto.port))
    ok, status = doctor.check_broker(cfg, 2.0)
    assert ok.verdict == "OK"
    assert (status.verdict, status.found) == (
        "WARN", "nothing on garden/taman-uji/gateway/gw-doc/status: the gateway has not "
        "connected to this broker yet")
    pub = Publisher(mosquitto.port)
    try:
        pub.publish("garden/taman-uji/gateway/gw-doc/status", "offline", retain=True)
    finally:
        pub.close()
    _, status = doctor.check_broker(cfg, 2.0)
    assert status.verdict == "WARN"
    assert "last word is 'offline'" in status.found


def test_broker_port_with_nothing_listening_fails_as_unreachable(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, raw_config(tmp_path, mqtt_port=free_port()))
    (result,) = doctor.check_broker(cfg, 2.0)
    assert (result.verdict, result.found) == ("FAIL", "connection refused")
    assert result.fix == "is mosquitto running? `sudo systemctl status mosquitto`"


# -- InfluxDB --------------------------------------------------------------------------------


def test_influx_present_database_is_ok_and_nothing_is_written(
    tmp_path: Path, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    influx_server.create_database(db_name)
    cfg = config_of(tmp_path, raw_config(tmp_path, influx_url=influx_server.url,
                                         database=db_name))
    (result,) = doctor.check_influx(cfg, 2.0)
    assert result.verdict == "OK", result
    assert f"InfluxDB 1.6.7~rc0, database '{db_name}' present and writable" in result.found
    assert influx_server.query("SHOW MEASUREMENTS", db=db_name) == []


def test_influx_missing_database_fails_with_the_create_database_fix(
    tmp_path: Path, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = config_of(tmp_path, raw_config(tmp_path, influx_url=influx_server.url,
                                         database=db_name))
    (result,) = doctor.check_influx(cfg, 2.0)
    assert (result.verdict, result.found) == ("FAIL", f"database '{db_name}' does not exist")
    assert f"""`influx -execute 'CREATE DATABASE "{db_name}"'`""" in result.fix
    # The check did not create it either.
    names = [row["name"] for row in influx_server.query("SHOW DATABASES")]
    assert db_name not in names


def test_influx_with_auth_right_password_ok_wrong_password_and_reader_fail(
    tmp_path: Path,
) -> None:
    with PrivateInfluxDB(tmp_path / "influx", auth=("admin", "rahasia")) as server:
        server.create_database("garden")
        server.query("CREATE USER \"pembaca\" WITH PASSWORD 'baca'")
        server.query('GRANT READ ON "garden" TO "pembaca"')
        raw = raw_config(tmp_path, influx_url=server.url)
        raw["influx"]["username"] = "admin"
        raw["influx"]["password"] = "rahasia"
        assert doctor.check_influx(config_of(tmp_path, raw), 2.0)[0].verdict == "OK"
        raw["influx"]["password"] = "salah"
        (wrong,) = doctor.check_influx(config_of(tmp_path, raw), 2.0)
        assert wrong.verdict == "FAIL"
        assert wrong.found == "credentials refused (user 'admin': authorization failed)"
        assert "GARDEN_GATEWAY_INFLUX__PASSWORD" in wrong.fix
        raw["influx"].update(username="pembaca", password="baca")
        (reader,) = doctor.check_influx(config_of(tmp_path, raw), 2.0)
        assert (reader.verdict, reader.found) == (
            "FAIL", "user 'pembaca' may not write to 'garden'")
        assert """GRANT WRITE ON "garden" TO "pembaca\"""" in reader.fix


def test_influx_unreachable_fails_with_the_service_fix(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, raw_config(tmp_path,
                                         influx_url=f"http://127.0.0.1:{free_port()}"))
    (result,) = doctor.check_influx(cfg, 2.0)
    assert result.verdict == "FAIL"
    assert result.found.startswith("unreachable")
    assert result.fix == "is influxd running? `sudo systemctl status influxdb`"


class _StubInfluxV2(BaseHTTPRequestHandler):
    """A stub of InfluxDB 2.x's /ping, bucket list and write: Debian's 1.6.7 has no v2 API."""

    token = "Token rahasia-v2"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("X-Influxdb-Version", "v2.7.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._answer(204)
        elif self.headers.get("Authorization") != self.token:
            self._answer(401, {"code": "unauthorized", "message": "unauthorized access"})
        elif self.path.startswith("/api/v2/buckets"):
            wanted = "name=garden" in self.path and "org=kutim" in self.path
            self._answer(200, {"buckets": [{"name": "garden"}] if wanted else []})
        else:
            self._answer(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        ok = self.headers.get("Authorization") == self.token and length == 0
        self._answer(204 if ok else 401)


@pytest.fixture
def stub_influx_v2() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubInfluxV2)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(("token", "bucket", "verdict", "found"), [
    ("rahasia-v2", "garden", "OK", "InfluxDB v2.7.4, bucket 'garden' present and writable"),
    ("salah", "garden", "FAIL", "token refused (unauthorized access)"),
    ("rahasia-v2", "kebun", "FAIL", "bucket 'kebun' not found in organisation 'kutim'"),
])
def test_influx_v2_against_a_stub(tmp_path: Path, stub_influx_v2: str, token: str,
                                  bucket: str, verdict: str, found: str) -> None:
    raw = raw_config(tmp_path, influx_url=stub_influx_v2)
    raw["influx"].update(api="v2", org="kutim", bucket=bucket, token=token)
    (result,) = doctor.check_influx(config_of(tmp_path, raw), 2.0)
    assert result.verdict == verdict
    assert result.found.startswith(found), result


# -- serial ports and Modbus -----------------------------------------------------------------

LEVEL = Block(function="holding", address=0, count=2, registers=(Register("level_mm", 0),))
BEYOND = Block(function="holding", address=60, count=8, registers=(Register("beyond", 66),))


def slave(device: str, unit: int, block: Block) -> dict[str, Any]:
    return {"device": device, "unit": unit, "measurement": "polder",
            "blocks": [block_config(block)]}


def test_modbus_slaves_answered_timeout_and_exception_each_get_their_line(
    tmp_path: Path,
) -> None:
    by_id = tmp_path / "dev" / "serial" / "by-id"
    by_id.mkdir(parents=True)
    with modbus_peer(by_id / "usb-polder-rs485-if00", units=(1, 2, 3)) as peer:
        peer.silenced.add(2)  # its wire is cut: it never hears the request
        raw = raw_config(tmp_path, modbus=[{
            "name": "polder-bus", "port": str(peer.link), "timeout_s": 0.3,
            "slaves": [slave("polder-1", 1, LEVEL), slave("pompa", 2, LEVEL),
                       slave("pintu", 3, BEYOND)]}])
        started = time.monotonic()
        done = run_cli(tmp_path, raw, "--skip", "broker", "--skip", "api")
        elapsed = time.monotonic() - started
    out = done.stdout
    assert line_of(out, "modbus polder-bus /").startswith(
        f"OK    modbus polder-bus {peer.link}: opened at 9600 8N1, polled 3 slaves")
    assert line_of(out, "unit 1 (polder-1)").startswith(
        "OK    modbus polder-bus unit 1 (polder-1): answered holding 0+2 in ")
    assert line_of(out, "unit 2 (pompa)") == (
        "FAIL  modbus polder-bus unit 2 (pompa): no answer to holding 0+2 within 0.3 s "
        "(timeout) — is the slave powered, and is its address 2? check the A/B wires (swap "
        "them if unsure) and the bus settings (9600 8N1)")
    assert "answered holding 60+8 with exception 2 (illegal data address)" in line_of(
        out, "unit 3 (pintu)")
    assert done.returncode == 1
    assert elapsed < 10


def test_modbus_port_held_by_the_running_gateway_is_fine_and_not_polled(
    tmp_path: Path,
) -> None:
    with modbus_peer(tmp_path / "ttyRS485") as peer:
        cfg = config_of(tmp_path, raw_config(tmp_path, modbus=[{
            "name": "polder-bus", "port": str(peer.link), "timeout_s": 0.3,
            "slaves": [slave("polder-1", 1, LEVEL)]}]))
        # Opened as the gateway opens it.
        with serial.Serial(str(peer.link), timeout=0, exclusive=True):
            results = doctor.check_modbus_bus(cfg, 0, 1.0)
        assert peer.requests == []
    (result,) = results
    assert result.verdict == "WARN"  # held, and also not a by-id name
    assert result.found == ("in use by another program, normally the running gateway (that "
                            "is fine); slaves not polled (stop the gateway to poll them); not "
                            "a stable name")


def test_serial_path_missing_fails_with_by_id_advice_and_tty_name_warns(
    tmp_path: Path,
) -> None:
    with pty_port() as port:
        raw = raw_config(tmp_path, serial=[
            {"name": "kebun", "port": "/dev/ttyUSB77"},
            {"name": "kebun-2", "port": port.tty},
        ])
        out = run_cli(tmp_path, raw, "--line-wait", "0", "--skip", "broker",
                      "--skip", "api").stdout
    assert line_of(out, "serial kebun /dev/ttyUSB77") == (
        "FAIL  serial kebun /dev/ttyUSB77: /dev/ttyUSB77 does not exist — is the adapter "
        "plugged in? `ls -l /dev/serial/by-id/` lists the adapters by a stable name: put the "
        "right one in serial[0].port (ttyUSB numbers change when adapters are replugged or "
        "the Pi reboots)")
    warned = line_of(out, "serial kebun-2")
    assert warned.startswith(f"WARN  serial kebun-2 {port.tty}: opened at 9600 baud; not a "
                             "stable name — set serial[1].port to the adapter's "
                             "/dev/serial/by-id/... link")


def test_line_sensor_answering_on_a_by_id_path_is_ok(tmp_path: Path) -> None:
    by_id = tmp_path / "dev" / "serial" / "by-id"
    by_id.mkdir(parents=True)
    with pty_port(by_id / "usb-kebun-if00") as port:
        stop = threading.Event()

        def sensor() -> None:
            while not stop.is_set():
                os.write(port.master, b"kebun-1 temperature_c=27.5 humidity_pct=81\r\n")
                stop.wait(0.05)

        talker = threading.Thread(target=sensor, daemon=True)
        talker.start()
        try:
            cfg = config_of(tmp_path, raw_config(tmp_path, serial=[
                {"name": "kebun", "port": port.path}]))
            (result,) = doctor.check_serial_source(cfg, 0, 2.0)
        finally:
            stop.set()
            talker.join(timeout=5)
    assert (result.verdict, result.found) == (
        "OK", "a line arrived: 'kebun-1 temperature_c=27.5 humidity_pct=81'")


def test_silent_line_sensor_warns(tmp_path: Path) -> None:
    with pty_port() as port:
        cfg = config_of(tmp_path, raw_config(tmp_path, serial=[
            {"name": "kebun", "port": port.tty}]))
        (result,) = doctor.check_serial_source(cfg, 0, 0.2)
    assert (result.verdict, result.found) == ("WARN", "opened, but nothing arrived in 0.2 s")


# -- config, exit codes, JSON ----------------------------------------------------------------


def test_invalid_config_exits_2_listing_every_problem_and_skipping_what_needs_it(
    tmp_path: Path,
) -> None:
    raw = raw_config(tmp_path)
    raw["mqtt"]["port"] = 70000
    raw["gateway"]["sitee"] = "x"
    done = run_cli(tmp_path, raw, "--skip", "systemd")
    out = done.stdout
    assert done.returncode == 2
    assert line_of(out, "config:").startswith("FAIL  config: ")
    assert "2 problems" in out
    assert "- mqtt.port: Input should be less than or equal to 65535 (got 70000)" in out
    assert "- gateway.sitee: unknown key (did you mean 'site'?)" in out
    assert line_of(out, "SKIP  broker") == (
        "SKIP  broker: not checked: it needs a valid config (see above)")
    assert line_of(out, "clock").split()[0] in ("OK", "WARN")  # still checked


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.ops.doctor", "--config", str(tmp_path / "nope.yaml"),
         "--env-file", os.devnull, "--json"],
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["exit_code"] == 2
    assert report["checks"][0]["verdict"] == "FAIL"
    assert "cannot read" in report["checks"][0]["details"][0]


def test_exit_0_with_only_ok_and_warn_and_json_parses(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    influx_server.create_database(db_name)
    raw = raw_config(tmp_path, mqtt_port=mosquitto.port, influx_url=influx_server.url,
                     database=db_name)
    text = run_cli(tmp_path, raw)
    assert text.returncode == 0, text.stdout
    assert {line.split()[0] for line in text.stdout.splitlines()[:-1]} <= {"OK", "WARN"}
    done = run_cli(tmp_path, raw, "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["exit_code"] == 0
    assert report["counts"]["FAIL"] == 0
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["config"] == "OK"
    assert verdicts[f"broker 127.0.0.1:{mosquitto.port}"] == "OK"
    assert verdicts[f"influx {influx_server.url}"] == "OK"
    assert verdicts["api http://127.0.0.1:{}/health".format(raw["api"]["port"])] == "WARN"
    assert {"disk", "spool", "clock", "systemd garden-gateway"} <= set(verdicts)


# -- clock -----------------------------------------------------------------------------------

NOW = 1_800_000_000.0  # 2027-01-15


def fake_clock(now: float = NOW, timedatectl: bool | None = None,
               adjtimex: int | None = None) -> ClockSources:
    return ClockSources(clock=FakeClock(int(now * 10**9)),
                        timedatectl=lambda timeout_s: timedatectl,
                        adjtimex=lambda: adjtimex)


@pytest.mark.parametrize(("sources", "verdict", "found"), [
    (fake_clock(now=86_400.0, timedatectl=True), "FAIL",
     "the clock says 1970-01-02 00:00:00 UTC: certainly wrong"),
    (fake_clock(timedatectl=True, adjtimex=0x40), "OK", "synchronised per timedatectl"),
    (fake_clock(timedatectl=False, adjtimex=0), "WARN", "2027-01-15 08:00:00 UTC but not "
     "synchronised per timedatectl"),
    (fake_clock(adjtimex=0x2001), "OK", "synchronised per the kernel (adjtimex)"),
    (fake_clock(adjtimex=0x2041), "WARN", "2027-01-15 08:00:00 UTC but not synchronised per "
     "the kernel (adjtimex)"),
    (fake_clock(), "WARN", "2027-01-15 08:00:00 UTC; cannot tell"),
])
def test_clock_verdicts_with_fake_sources(sources: ClockSources, verdict: str,
                                          found: str) -> None:
    (result,) = doctor.check_clock(sources, 1.0)
    assert result.verdict == verdict
    assert result.found.startswith(found), result
    assert bool(result.fix) == (verdict != "OK")


def test_adjtimex_really_runs_here() -> None:
    status = doctor.adjtimex_status()
    assert isinstance(status, int)
    # STA_CLOCKERR and friends aside, only the documented bits (0..15) exist.
    assert 0 <= status < 1 << 16
    (result,) = doctor.check_clock(ClockSources(timedatectl=lambda timeout_s: None), 1.0)
    assert "per the kernel (adjtimex)" in result.found


def fake_run(stdout: str = "", stderr: str = "", returncode: int = 0,
             raises: BaseException | None = None) -> doctor.CommandRunner:
    def run(argv: Sequence[str], timeout_s: float) -> CommandOutput:
        if raises is not None:
            raise raises
        return CommandOutput(returncode, stdout, stderr)
    return run


def test_timedatectl_answers_are_read_with_a_fake_runner() -> None:
    assert doctor.timedatectl_synchronised(fake_run("yes\n"), 1.0) is True
    assert doctor.timedatectl_synchronised(fake_run("no\n"), 1.0) is False
    assert doctor.timedatectl_synchronised(fake_run(
        stderr="System has not been booted with systemd as init system (PID 1). Can't "
        "operate.\n", returncode=1), 1.0) is None
    assert doctor.timedatectl_synchronised(fake_run(raises=FileNotFoundError()), 1.0) is None


# -- systemd ---------------------------------------------------------------------------------

ACTIVE = ("LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n"
          "NRestarts=0\nActiveEnterTimestamp=Sun 2026-11-29 06:00:00 WITA\nResult=success\n")


@pytest.mark.parametrize(("run", "verdict", "found"), [
    (fake_run(ACTIVE), "OK", "active (running) since Sun 2026-11-29 06:00:00 WITA, enabled"),
    (fake_run(ACTIVE.replace("NRestarts=0", "NRestarts=4")), "WARN",
     "active (running) since Sun 2026-11-29 06:00:00 WITA, enabled, restarted 4 times"),
    (fake_run(ACTIVE.replace("=enabled", "=disabled")), "WARN",
     "active (running) since Sun 2026-11-29 06:00:00 WITA, disabled: will not start"),
    (fake_run(ACTIVE.replace("=active", "=failed").replace("=success", "=exit-code")),
     "FAIL", "failed (result exit-code, 0 restarts)"),
    (fake_run(ACTIVE.replace("=active", "=activating").replace("=running", "=auto-restart")
              .replace("NRestarts=0", "NRestarts=9")), "FAIL",
     "crashing and restarting (9 restarts so far)"),
    (fake_run(ACTIVE.replace("=active", "=inactive").replace("=running", "=dead")), "WARN",
     "inactive (dead)"),
    (fake_run("LoadState=not-found\nActiveState=inactive\n"), "WARN",
     "garden-gateway.service is not installed"),
    (fake_run(stderr="System has not been booted with systemd as init system (PID 1). "
              "Can't operate.\nFailed to connect to bus: Host is down\n", returncode=1),
     "WARN", "cannot ask systemd here"),
    (fake_run(raises=FileNotFoundError()), "WARN", "no systemctl: cannot ask systemd here"),
    (fake_run(raises=subprocess.TimeoutExpired(["systemctl"], 1.0)), "WARN",
     "systemctl did not answer in 1 s"),
])
def test_systemd_verdicts_with_a_fake_systemctl(run: doctor.CommandRunner, verdict: str,
                                                found: str) -> None:
    (result,) = doctor.check_systemd("garden-gateway", run, 1.0)
    assert result.verdict == verdict
    assert result.found.startswith(found), result
    assert bool(result.fix) == (verdict != "OK")


# -- disk and spool --------------------------------------------------------------------------


def test_spool_waiting_rows_and_age_are_read_while_the_gateway_holds_it_open(
    tmp_path: Path,
) -> None:
    cfg = config_of(tmp_path, raw_config(tmp_path))
    now_ns = time.time_ns()
    spool = SpoolDB(cfg.data_dir / "spool.sqlite3", max_bytes=cfg.spool.max_bytes)
    try:
        spool.append([f"polder,device=p1 level_cm={i} {now_ns - 60 * 10**9 + i}"
                      for i in range(5)])
        (fresh,) = doctor.check_spool(cfg)
        assert fresh.verdict == "OK"
        assert "about 5 readings waiting, the oldest from 60 s ago" in fresh.found
        (stale,) = doctor.check_spool(cfg, FakeClock(now_ns + 7200 * 10**9))
        assert stale.verdict == "WARN"
        assert "the oldest from 2.0 h ago" in stale.found
        assert spool.append(["polder,device=p1 level_cm=9 1"]) == 0  # still writable
    finally:
        spool.close()


def test_spool_nearly_full_fails(tmp_path: Path) -> None:
    raw = raw_config(tmp_path, spool={"max_bytes": 64 * 1024})
    cfg = config_of(tmp_path, raw)
    spool = SpoolDB(cfg.data_dir / "spool.sqlite3", max_bytes=10 * 1024 * 1024)
    try:
        spool.append([f"polder,device=p1 level_cm={i},pad=\"{'x' * 200}\" {i}"
                      for i in range(1000)])
    finally:
        spool.close()
    (result,) = doctor.check_spool(cfg)
    assert result.verdict == "FAIL"
    assert result.found.startswith("nearly full:")


def test_disk_fails_when_the_spool_could_outgrow_the_free_space(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, raw_config(tmp_path, spool={"max_bytes": 1 << 60}))
    (result,) = doctor.check_disk(cfg)
    assert result.verdict == "FAIL"
    assert "but the spool may grow by" in result.found
    assert "lower spool.max_bytes" in result.fix
    assert not cfg.data_dir.exists()  # looked at, not made


# -- bounded time ----------------------------------------------------------------------------


async def test_a_hanging_check_is_one_fail_line_in_bounded_time() -> None:
    release = threading.Event()

    def hangs() -> list[Result]:
        release.wait(30)
        return []

    def breaks() -> list[Result]:
        raise KeyError("oops")

    started = time.monotonic()
    try:
        hung = await doctor._guarded("influx", "influx", 0.2, hangs)
        broke = await doctor._guarded("disk", "disk", 1.0, breaks)
    finally:
        release.set()
    assert time.monotonic() - started < 2
    assert [(r.verdict, r.found) for r in hung] == [("FAIL", "no verdict within 0.2 s")]
    assert [(r.verdict, r.found) for r in broke] == [
        ("FAIL", "the check itself failed: KeyError: 'oops'")]


def test_the_gateway_cli_runs_doctor(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "doctor", "--config", str(tmp_path / "nope.yaml"),
         "--env-file", os.devnull, "--json"],
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["checks"][0]["check"] == "config"
