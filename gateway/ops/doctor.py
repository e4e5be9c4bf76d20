"""``garden-gateway doctor``: what is wrong at this park, each with a plain verdict and a fix.

For the field technician at the park with a laptop or a phone's SSH session. One line per
check: ``OK``, ``WARN`` or ``FAIL``, the check's name, what was found and, for WARN and FAIL, a
concrete fix. ``--json`` gives the same for machines. Exit codes follow ``gateway/ops/cli.py``: 0
when nothing failed (warnings allowed), 1 when a check failed, 2 for bad usage or a config that
cannot be read or is not valid.

The checks, in the order they are shown:

- ``config``: :func:`gateway.config.load_config`, every problem and warning. Secrets come from
  the environment, as for the service, plus ``/etc/garden-gateway/secrets.env`` (the unit's
  ``EnvironmentFile``) for what the shell does not set; without it a doctor run from a shell
  would call right passwords wrong.
- ``broker``: an MQTT connect with the gateway's settings (host, port, TLS, credentials,
  protocol) under a client id of its own and a clean session: the gateway's id would throw the
  running gateway off its persistent session. Then the gateway's retained status topic.
- ``influx``: ``/ping``, then an empty write. InfluxDB 1.x answers an empty ``/write`` with
  204 only after checking the credentials, that the database exists and that the user may
  write to it, and writes nothing (checked against Debian's 1.6.7 in the tests): no test
  point in a production database. v2: the bucket is looked up, then the same empty write.
- ``serial``/``modbus``: each configured port exists, is a stable ``/dev/serial/by-id`` name,
  is a character device, opens (exclusive, as the gateway opens it; held by someone else, it
  is "in use", normally by the running gateway, which is fine, and not touched). A line
  sensor is given a few seconds for one complete line; each Modbus slave is polled once with
  the gateway's own RTU framing (:class:`devices.modbus_rtu.ReadExchange`).
- ``clock``: synchronised per ``timedatectl``, else the kernel (``adjtimex``'s STA_UNSYNC);
  a wall clock before 2026 is wrong whatever anyone says.
- ``disk`` and ``spool``: free space where ``data_dir`` lives against ``spool.max_bytes``;
  the spool's size, waiting readings and the oldest one's age, read-only with a short busy
  timeout so the running gateway is never blocked.
- ``systemd``: the unit's state, whether it is enabled, its automatic restarts.
- ``api``: the running gateway's ``/health``.

Every check runs at the same time as the others under its own time limit, and a check that
breaks or hangs is one FAIL line, never the end of the run. Blocking work (DNS, connect,
serial reads, subprocesses) runs on daemon threads, each with its own timeout: a DNS lookup
that hangs past its limit is abandoned, and the process still exits on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime as dt
import errno
import functools
import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import paho.mqtt.client as paho
import serial
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.modbus_rtu import EXCEPTION_NAMES, ReadExchange
from gateway.config import Config, LoadedConfig, ModbusBusConfig, load_config
from gateway.core.errors import ConfigError
from gateway.park.state_topics import gateway_status_topic
from gateway.store.lineproto import split_time

# The exit codes of gateway/ops/cli.py (not imported from it: cli.py imports this module).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Verdict = Literal["OK", "WARN", "FAIL", "SKIP"]
CHECKS = ("config", "broker", "influx", "serial", "clock", "disk", "systemd", "api")
SKIPPABLE = tuple(c for c in CHECKS if c != "config")

SECRETS_ENV = Path("/etc/garden-gateway/secrets.env")
DEFAULT_UNIT = "garden-gateway"
# Before this the clock is certainly wrong (no gateway ran earlier): a Pi without RTC after
# a power cut, before NTP.
CLOCK_FLOOR = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DISK_WARN_PCT = 15.0
DISK_FAIL_PCT = 5.0
# The spool this full: the gateway is dropping the oldest readings (or about to).
SPOOL_FULL_PCT = 90.0
# The oldest waiting reading older than this: InfluxDB has not been taking them.
SPOOL_STALE_S = 3600.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the report."""

    check: str
    name: str
    verdict: Verdict
    found: str
    fix: str = ""
    details: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.verdict:<5} {self.name}: {self.found}"
        if self.fix:
            text += f" — {self.fix}"
        return "\n".join([text, *(f"        - {d}" for d in self.details)])


@dataclass(frozen=True, slots=True)
class Options:
    timeout_s: float = 5.0
    line_wait_s: float = 3.0
    unit: str = DEFAULT_UNIT
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Report:
    results: tuple[Result, ...]
    config_valid: bool

    @property
    def exit_code(self) -> int:
        if not self.config_valid:
            return EXIT_USAGE
        return EXIT_FAILED if any(r.verdict == "FAIL" for r in self.results) else EXIT_OK

    def counts(self) -> dict[str, int]:
        return {v: sum(1 for r in self.results if r.verdict == v)
                for v in ("OK", "WARN", "FAIL", "SKIP")}

    def text(self) -> str:
        counts = self.counts()
        summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        return "\n".join([*(r.line() for r in self.results), f"doctor: {summary}"])

    def as_json(self) -> str:
        return json.dumps({
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [dataclasses.asdict(r) for r in self.results],
        }, indent=2)


# -- running checks: daemon threads under a time limit -----------------------------------------


async def _in_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on a daemon thread: abandoned (not waited for) when the caller gives up."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # The loop is gone when the check was abandoned and the run is over.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=f"doctor {name}", daemon=True).start()
    return await future


async def _guarded(check: str, name: str, budget_s: float,
                   fn: Callable[[], list[Result]]) -> list[Result]:
    try:
        async with asyncio.timeout(budget_s):
            return await _in_thread(fn, name)
    except TimeoutError:
        return [Result(check, name, "FAIL", f"no verdict within {budget_s:g} s",
                       "something hangs (DNS? a network path that drops packets?); try again "
                       "with a longer --timeout")]
    except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
        return [Result(check, name, "FAIL", f"the check itself failed: "
                       f"{type(exc).__name__}: {exc}",
                       "this is a doctor bug: please report it with this line")]


# -- config ----------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile reads them (comments, quotes)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def doctor_env(env_file: Path | None, environ: Mapping[str, str],
               notes: list[str]) -> dict[str, str] | None:
    """The service's environment as far as we can see it; None: ``env_file`` is unusable.

    The shell's variables win over the file's, so a technician can try a value out.
    """
    path = env_file or SECRETS_ENV
    try:
        from_file = read_env_file(path)
    except FileNotFoundError:
        if env_file is not None:
            notes.append(f"{path}: no such file")
            return None
        return dict(environ)
    except OSError as exc:
        if env_file is not None:
            notes.append(f"{path}: cannot read: {exc.strerror}")
            return None
        notes.append(f"cannot read {path} ({exc.strerror}): the passwords in it are not "
                     "used here; run doctor with sudo to check with them")
        return dict(environ)
    return {**from_file, **environ}


def check_config(path: Path, env: Mapping[str, str] | None,
                 notes: Sequence[str]) -> tuple[Result, LoadedConfig | None]:
    fix = (f"edit {path} (each line names the key), then run doctor again "
           f"(or `garden-gateway check-config --config {path}`)")
    if env is None:
        return Result("config", "config", "FAIL", "the environment file is not usable",
                      "give an --env-file that exists and can be read", tuple(notes)), None
    try:
        loaded = load_config(path, env=env)
    except ConfigError as exc:
        n = len(exc.problems)
        return Result("config", "config", "FAIL",
                      f"{path}: {n} problem{'s' if n != 1 else ''}", fix,
                      (*exc.problems, *notes)), None
    cfg = loaded.config
    found = f"{path} is valid (gateway {cfg.gateway.id}, site {cfg.gateway.site})"
    warnings = (*loaded.warnings, *notes)
    if warnings:
        return Result("config", "config", "WARN", found + ", with warnings",
                      "see the warnings below", warnings), loaded
    return Result("config", "config", "OK", found), loaded


# -- MQTT broker -----------------------------------------------------------------------------

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _broker_fix_unreachable(host: str) -> str:
    if host in _LOCAL_HOSTS:
        return "is mosquitto running? `sudo systemctl status mosquitto`"
    return f"is the broker at {host} up, and does mqtt.host/mqtt.port name it?"


@dataclass(slots=True)
class _MqttProbe:
    connack: ReasonCode | None = None
    disconnected: bool = False
    subscribed: list[ReasonCode] | None = None
    unsubscribed: bool = False
    status: bytes | None = None


def check_broker(cfg: Config, timeout_s: float) -> list[Result]:
    """Connect as the gateway would, with another client id; then read its status topic."""
    from gateway.sources.mqtt import (
        _tls_context,  # the gateway's own TLS settings, for a true verdict
    )

    m = cfg.mqtt
    name = f"broker {m.host}:{m.port}"
    v5 = m.protocol == "5"
    probe = _MqttProbe()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        # Never the gateway's id: the broker would drop the gateway's own connection.
        client_id=f"gg-doctor-{secrets.token_hex(4)}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )

    def on_connect(c: paho.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        probe.connack = reason

    def on_disconnect(c: paho.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        probe.disconnected = True

    def on_subscribe(c: paho.Client, u: Any, mid: int, reasons: list[ReasonCode],
                     p: Any) -> None:
        probe.subscribed = reasons

    def on_unsubscribe(c: paho.Client, u: Any, mid: int, reasons: Any, p: Any) -> None:
        probe.unsubscribed = True

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        probe.status = bytes(msg.payload)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_unsubscribe = on_unsubscribe
    client.on_message = on_message
    client.connect_timeout = timeout_s
    tls = ""
    if m.username:
        client.username_pw_set(m.username,
                               m.password.get_secret_value() if m.password else None)
    try:
        if m.tls is not None:
            tls = ", TLS"
            client.tls_set_context(_tls_context(m.tls))
    except (OSError, ssl.SSLError) as exc:
        return [Result("broker", name, "FAIL", f"cannot load the TLS files: {exc}",
                       "check mqtt.tls.ca_file / cert_file / key_file")]
    deadline = time.monotonic() + timeout_s
    try:
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0  # nothing of ours stays at the broker
            client.connect(m.host, m.port, keepalive=max(m.keepalive_s, 10), clean_start=True,
                           properties=props)
        else:
            client.connect(m.host, m.port, keepalive=max(m.keepalive_s, 10))
    except ssl.SSLCertVerificationError as exc:
        return [Result("broker", name, "FAIL",
                       f"TLS: the broker's certificate is not accepted ({exc.verify_message})",
                       "check mqtt.tls.ca_file, and that mqtt.host is a name in the "
                       "certificate")]
    except ssl.SSLError as exc:
        return [Result("broker", name, "FAIL", f"TLS handshake failed ({exc.reason})",
                       "does the broker speak TLS on this port (usually 8883)? check mqtt.port "
                       "and mqtt.tls")]
    except socket.gaierror as exc:
        return [Result("broker", name, "FAIL", f"cannot resolve {m.host}: {exc.strerror}",
                       "check mqtt.host and the Pi's DNS (`getent hosts " + m.host + "`)")]
    except ConnectionRefusedError:
        return [Result("broker", name, "FAIL", "connection refused",
                       _broker_fix_unreachable(m.host))]
    except TimeoutError:
        return [Result("broker", name, "FAIL", f"no answer within {timeout_s:g} s",
                       "a firewall or a network path that drops packets; check the route "
                       "to the broker")]
    except OSError as exc:
        return [Result("broker", name, "FAIL", f"cannot connect: {exc.strerror or exc}",
                       _broker_fix_unreachable(m.host))]
    try:
        return _broker_session(cfg, client, probe, name, tls, deadline, timeout_s)
    finally:
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _loop_until(client: paho.Client, done: Callable[[], bool], deadline: float) -> bool:
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if client.loop(timeout=min(0.05, left)) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return done()
    return True


def _broker_session(cfg: Config, client: paho.Client, probe: _MqttProbe, name: str, tls: str,
                    deadline: float, timeout_s: float) -> list[Result]:
    m = cfg.mqtt
    got = _loop_until(client, lambda: probe.connack is not None or probe.disconnected,
                      deadline)
    if probe.connack is None:
        if not got:
            return [Result("broker", name, "FAIL", f"no CONNACK within {timeout_s:g} s",
                           "is this port an MQTT broker? does it want TLS (mqtt.tls)?")]
        return [Result("broker", name, "FAIL", "the broker closed the connection before "
                       "answering", "does the broker want TLS on this port (mqtt.tls), or "
                       "another protocol version (mqtt.protocol)? its log says why")]
    reason = probe.connack
    if reason.is_failure:
        value = reason.value
        if value in (0x86, 0x87, 0x04, 0x05, 0x8C):
            who = f"user {m.username!r}" if m.username else "no username"
            return [Result("broker", name, "FAIL", f"not authorised ({reason}; {who})",
                           "check mqtt.username and GARDEN_GATEWAY_MQTT__PASSWORD in "
                           f"{SECRETS_ENV} (or mqtt.password_file)")]
        if value in (0x84, 0x01):
            return [Result("broker", name, "FAIL", f"refused: {reason}",
                           'the broker does not speak this MQTT version: set mqtt.protocol: '
                           '"3.1.1"' if m.protocol == "5" else "upgrade the broker")]
        if value in (0x85, 0x02):
            return [Result("broker", name, "FAIL", f"refused the client id: {reason}",
                           "the broker restricts client ids; allow garden-gateway-* and "
                           "gg-doctor-* in its config")]
        return [Result("broker", name, "FAIL", f"refused: {reason}",
                       "the broker's log says why (`journalctl -u mosquitto`)")]
    who = f" as {m.username}" if m.username else ""
    results = [Result("broker", name, "OK",
                      f"connected and accepted (MQTT {m.protocol}{tls}{who})")]
    if cfg.liveness.publish_mqtt:
        results.append(_gateway_status(cfg, client, probe, deadline))
    client.disconnect()
    _loop_until(client, lambda: probe.disconnected, min(deadline, time.monotonic() + 1.0))
    return results


def _gateway_status(cfg: Config, client: paho.Client, probe: _MqttProbe,
                    deadline: float) -> Result:
    topic = gateway_status_topic(cfg.gateway.site, cfg.gateway.id)
    name = "gateway status on MQTT"
    client.subscribe(topic, qos=1)
    if not _loop_until(client, lambda: probe.subscribed is not None, deadline):
        return Result("broker", name, "WARN", f"no answer to a subscription to {topic}",
                      "the broker is slow or drops subscriptions; look at its log")
    assert probe.subscribed is not None
    if any(r.is_failure for r in probe.subscribed):
        return Result("broker", name, "WARN", f"the broker refuses to let us read {topic}",
                      "allow reading garden/# for this user in the broker's ACL to see it")
    # The broker sends a retained message before it handles our next packet: once this
    # UNSUBACK is here, a retained status has arrived if there is one.
    client.unsubscribe(topic)
    if not _loop_until(client, lambda: probe.unsubscribed, deadline):
        return Result("broker", name, "WARN", f"no answer about {topic} in time",
                      "the broker is slow; try again with a longer --timeout")
    if probe.status == b"online":
        return Result("broker", name, "OK", f"the running gateway says online ({topic})")
    if probe.status is None:
        return Result("broker", name, "WARN", f"nothing on {topic}: the gateway has not "
                      "connected to this broker yet", "start it: `sudo systemctl start "
                      "garden-gateway`; `journalctl -u garden-gateway -n 50` says why not")
    said = probe.status.decode("utf-8", "replace")[:40]
    return Result("broker", name, "WARN", f"the gateway's last word is {said!r} ({topic}): "
                  "it is stopped or lost its connection",
                  "`sudo systemctl status garden-gateway`; `journalctl -u garden-gateway -n 50`")


# -- InfluxDB --------------------------------------------------------------------------------


def _influx_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:200]
    return response.text.strip()[:200]


def _influx_local(url: str) -> bool:
    host = httpx.URL(url).host
    return host in _LOCAL_HOSTS


def check_influx(cfg: Config, timeout_s: float) -> list[Result]:
    i = cfg.influx
    name = f"influx {i.url}"
    if not i.enabled:
        return [Result("influx", "influx", "WARN",
                       "disabled (influx.enabled: false): readings stay in the spool until it "
                       f"is full ({_size(cfg.spool.max_bytes)})",
                       "set influx.enabled: true once a server is reachable")]
    headers: dict[str, str] = {}
    auth: httpx.BasicAuth | None = None
    if i.api == "v2":
        if i.token is not None:
            headers["Authorization"] = f"Token {i.token.get_secret_value()}"
    elif i.username:
        auth = httpx.BasicAuth(i.username, i.password.get_secret_value() if i.password else "")
    with httpx.Client(base_url=i.url.rstrip("/"), headers=headers, auth=auth,
                      timeout=timeout_s) as http:
        try:
            ping = http.get("/ping")
        except httpx.ConnectError as exc:
            fix = ("is influxd running? `sudo systemctl status influxdb`" if _influx_local(i.url)
                   else "check influx.url and the network path to the server")
            return [Result("influx", name, "FAIL", f"unreachable ({exc})", fix)]
        except httpx.TimeoutException:
            return [Result("influx", name, "FAIL", f"no answer within {timeout_s:g} s",
                           "the server is overloaded or a firewall drops packets")]
        except httpx.HTTPError as exc:
            return [Result("influx", name, "FAIL", f"{type(exc).__name__}: {exc}",
                           "check influx.url (http or https? the port?)")]
        version = ping.headers.get("X-Influxdb-Version")
        if ping.status_code not in (200, 204) or version is None:
            return [Result("influx", name, "FAIL",
                           f"/ping answered {ping.status_code} without an InfluxDB version: "
                           "this is not InfluxDB", "check influx.url (the port: 8086?)")]
        if i.api == "v2":
            return _influx_v2(cfg, http, name, version)
        return _influx_v1(cfg, http, name, version)


def _influx_v1(cfg: Config, http: httpx.Client, name: str, version: str) -> list[Result]:
    i = cfg.influx
    params = {"db": i.database, "precision": "ns"}
    if i.retention_policy:
        params["rp"] = i.retention_policy
    # An empty body: checked (credentials, database, write right), nothing written.
    response = http.post("/write", params=params, content=b"")
    status = response.status_code
    message = _influx_message(response)
    who = f"user {i.username!r}" if i.username else "no username"
    login = f" -username {i.username} -password ''" if i.username else ""
    if status == 204:
        return [Result("influx", name, "OK",
                       f"InfluxDB {version}, database {i.database!r} present and writable "
                       f"({who}; checked with an empty write, nothing written)")]
    if status == 401:
        fix = ("set influx.username and GARDEN_GATEWAY_INFLUX__PASSWORD in "
               f"{SECRETS_ENV}: the server wants a user") if not i.username else (
               f"check influx.username and GARDEN_GATEWAY_INFLUX__PASSWORD in {SECRETS_ENV} "
               "(or influx.password_file)")
        return [Result("influx", name, "FAIL", f"credentials refused ({who}: {message})", fix)]
    if status == 403:
        return [Result("influx", name, "FAIL", f"{who} may not write to {i.database!r}",
                       f"as an admin: `influx{login} -execute 'GRANT WRITE ON "
                       f"\"{i.database}\" TO \"{i.username}\"'`")]
    if status == 404 and "database not found" in message:
        also = (" (or let the gateway create it: influx.create_database is on, and works "
                "when its user is an admin)") if i.create_database else ""
        return [Result("influx", name, "FAIL", f"database {i.database!r} does not exist",
                       f"`influx{login} -execute 'CREATE DATABASE \"{i.database}\"'`{also}")]
    if "retention policy not found" in message:
        return [Result("influx", name, "FAIL",
                       f"retention policy {i.retention_policy!r} does not exist in "
                       f"{i.database!r}", "remove influx.retention_policy, or create it: "
                       f"`influx{login} -execute 'CREATE RETENTION POLICY "
                       f"\"{i.retention_policy}\" ON \"{i.database}\" DURATION 0s "
                       "REPLICATION 1'`")]
    return [Result("influx", name, "FAIL", f"a test write was answered {status}: {message}",
                   "the server's log says why (`journalctl -u influxdb -n 50`)")]


def _influx_v2(cfg: Config, http: httpx.Client, name: str, version: str) -> list[Result]:
    i = cfg.influx
    token_fix = f"check GARDEN_GATEWAY_INFLUX__TOKEN in {SECRETS_ENV} (or influx.token_file)"
    found = http.get("/api/v2/buckets", params={"org": i.org or "", "name": i.bucket or ""})
    if found.status_code in (401, 403):
        return [Result("influx", name, "FAIL",
                       f"token refused ({_influx_message(found)})", token_fix)]
    if found.status_code == 404:
        return [Result("influx", name, "FAIL",
                       f"organisation {i.org!r} not found ({_influx_message(found)})",
                       "check influx.org (`influx org list`)")]
    if found.status_code != 200:
        return [Result("influx", name, "FAIL", f"listing buckets was answered "
                       f"{found.status_code}: {_influx_message(found)}",
                       "the server's log says why")]
    try:
        buckets = found.json().get("buckets") or []
    except (ValueError, AttributeError):
        buckets = []
    if not any(isinstance(b, dict) and b.get("name") == i.bucket for b in buckets):
        return [Result("influx", name, "FAIL", f"bucket {i.bucket!r} not found in "
                       f"organisation {i.org!r}",
                       f"`influx bucket create -n {i.bucket} -o {i.org}`, or check influx.bucket")]
    response = http.post("/api/v2/write", params={"org": i.org or "", "bucket": i.bucket or "",
                                                  "precision": "ns"}, content=b"")
    if response.status_code == 204:
        return [Result("influx", name, "OK",
                       f"InfluxDB {version}, bucket {i.bucket!r} present and writable "
                       "(checked with an empty write, nothing written)")]
    if response.status_code in (401, 403):
        return [Result("influx", name, "FAIL",
                       f"the token may not write to {i.bucket!r} ({_influx_message(response)})",
                       "give the token write access to the bucket, " + token_fix)]
    return [Result("influx", name, "WARN", f"bucket {i.bucket!r} present; an empty write was "
                   f"answered {response.status_code}, so writing is not confirmed",
                   "watch `garden-gateway` status: forwarder errors name the cause")]


# -- serial ports and Modbus buses ------------------------------------------------------------


def stable_name(port: str) -> bool:
    return "/serial/by-id/" in port or "/serial/by-path/" in port


def _by_id_for(real: str) -> str | None:
    """The /dev/serial/by-id link that points at ``real`` (the device), if there is one."""
    base = Path("/dev/serial/by-id")
    with contextlib.suppress(OSError):
        for link in sorted(base.iterdir()):
            if os.path.realpath(link) == real:
                return str(link)
    return None


def _by_id_advice(where: str, port: str) -> str:
    real = os.path.realpath(port)
    link = _by_id_for(real) if os.path.exists(port) else None
    if link is not None:
        return f"set {where}.port to {link} (it points to {Path(real).name})"
    return (f"set {where}.port to the adapter's /dev/serial/by-id/... link "
            "(`ls -l /dev/serial/by-id/`)")


_BY_ID_WHY = "ttyUSB numbers change when adapters are replugged or the Pi reboots"


@dataclass(slots=True)
class _Opened:
    port: serial.Serial | None = None
    in_use: bool = False


def _open_port(check: str, name: str, where: str, port: str,
               serial_args: dict[str, Any]) -> _Opened | Result:
    """Open ``port`` as the gateway does (exclusive), or the FAIL saying why not."""
    if not os.path.lexists(port):
        extra = "" if stable_name(port) else f" ({_BY_ID_WHY})"
        return Result(check, name, "FAIL", f"{port} does not exist",
                      f"is the adapter plugged in? `ls -l /dev/serial/by-id/` lists the "
                      f"adapters by a stable name: put the right one in {where}.port{extra}")
    if not os.path.exists(port):
        return Result(check, name, "FAIL",
                      f"{port} points to {os.readlink(port)}, which is gone",
                      "the adapter was unplugged or died; plug it in (another USB port or "
                      "cable?) and check `dmesg | tail`")
    mode = os.stat(port).st_mode
    if not stat.S_ISCHR(mode):
        return Result(check, name, "FAIL", f"{port} is not a serial device",
                      _by_id_advice(where, port))
    try:
        return _Opened(serial.Serial(port, timeout=0, exclusive=True, **serial_args))
    except serial.SerialException as exc:
        code = exc.errno
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            return _Opened(in_use=True)
        if code == errno.EACCES:
            return Result(check, name, "FAIL", f"{port}: permission denied",
                          "the service's user gets the dialout group from the unit; to check "
                          "by hand run doctor with sudo, or `sudo usermod -aG dialout $USER` "
                          "and log in again")
        if code == errno.ENOENT:
            return Result(check, name, "FAIL", f"{port} vanished while opening it",
                          "a loose USB cable or adapter? check `dmesg | tail`")
        return Result(check, name, "FAIL", f"cannot open {port}: {exc}",
                      "check the adapter (`dmesg | tail`) and the port's settings")
    except (OSError, ValueError) as exc:
        return Result(check, name, "FAIL", f"cannot open {port}: {exc}",
                      "check the port's settings (baudrate, parity, stopbits)")


def _port_verdict(check: str, name: str, where: str, port: str, found: str) -> Result:
    if stable_name(port):
        return Result(check, name, "OK", found)
    return Result(check, name, "WARN", f"{found}; not a stable name",
                  f"{_by_id_advice(where, port)} — {_BY_ID_WHY}")


_IN_USE = "in use by another program, normally the running gateway (that is fine)"


def check_serial_source(cfg: Config, index: int, line_wait_s: float) -> list[Result]:
    src = cfg.serial[index]
    where = f"serial[{index}]"
    name = f"serial {src.name} {src.port}"
    opened = _open_port("serial", name, where, src.port, {"baudrate": src.baudrate})
    if isinstance(opened, Result):
        return [opened]
    if opened.port is None:
        return [_port_verdict("serial", name, where, src.port, f"{_IN_USE}; not read")]
    with opened.port as port:
        port.reset_input_buffer()
        if line_wait_s <= 0:
            return [_port_verdict("serial", name, where, src.port,
                                  f"opened at {src.baudrate} baud")]
        got, line = _one_line(port, line_wait_s, src.max_line_bytes)
    if line is None:
        if got:
            return [Result("serial", name, "WARN", f"{got} bytes in {line_wait_s:g} s but no "
                           "complete line", f"a wrong baudrate ({src.baudrate})? or a line "
                           "ending the sensor does not send?")]
        return [Result("serial", name, "WARN", f"opened, but nothing arrived in "
                       f"{line_wait_s:g} s", f"is the sensor powered and wired (its TX to the "
                       f"adapter's RX)? does it send at {src.baudrate} baud? it may just report "
                       "less often (--line-wait)")]
    text = line.decode("utf-8", "replace").strip()
    printable = sum(ch.isprintable() for ch in text)
    if not text or printable < 0.9 * len(text):
        return [Result("serial", name, "WARN", f"a line arrived but it is not text: {line[:40]!r}",
                       f"a wrong baudrate? the config says {src.baudrate}")]
    shown = text if len(text) <= 60 else text[:57] + "..."
    return [_port_verdict("serial", name, where, src.port, f"a line arrived: {shown!r}")]


def _one_line(port: serial.Serial, wait_s: float, max_bytes: int) -> tuple[int, bytes | None]:
    """One complete line that began after we opened: (bytes seen, the line or None)."""
    deadline = time.monotonic() + wait_s
    buf = b""
    seen = 0
    started = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return seen, None
        port.timeout = left
        data = port.read(max(1, port.in_waiting))
        seen += len(data)
        buf += data
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            # The first piece may be the end of a line that began before we listened.
            if started:
                return seen, line
            started = True
        if len(buf) > max_bytes:
            return seen, None


def check_modbus_bus(cfg: Config, index: int, timeout_s: float) -> list[Result]:
    bus = cfg.modbus[index]
    where = f"modbus[{index}]"
    name = f"modbus {bus.name} {bus.port}"
    settings = f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"
    opened = _open_port("serial", name, where, bus.port, {
        "baudrate": bus.baudrate, "bytesize": bus.bytesize, "parity": bus.parity,
        "stopbits": bus.stopbits})
    if isinstance(opened, Result):
        return [opened]
    if opened.port is None:
        return [_port_verdict("serial", name, where, bus.port,
                              f"{_IN_USE}; slaves not polled (stop the gateway to poll them)")]
    with opened.port as port:
        slaves = [_poll_slave(port, bus, i, timeout_s) for i in range(len(bus.slaves))]
    n = len(slaves)
    head = _port_verdict("serial", name, where, bus.port,
                         f"opened at {settings}, polled {n} slave{'s' if n != 1 else ''}")
    return [head, *slaves]


def _poll_slave(port: serial.Serial, bus: ModbusBusConfig, index: int,
                timeout_s: float) -> Result:
    slave = bus.slaves[index]
    block = slave.blocks[0]
    name = f"modbus {bus.name} unit {slave.unit} ({slave.device})"
    what = f"{block.function} {block.address}+{block.count}"
    settings = f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"
    exchange = ReadExchange(slave.unit, block.function, block.address, block.count,
                            echo=bus.echo)
    wait_s = min(bus.timeout_s, timeout_s)
    port.reset_input_buffer()
    # RS485 wants a quiet line (3.5 characters) before a request: the protocol, not a guess.
    time.sleep(max(bus.turnaround_s, 3.5 * 11 / bus.baudrate))
    port.write(exchange.request)
    started = time.monotonic()
    deadline = started + wait_s
    while not exchange.done:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        port.timeout = left
        data = port.read(max(1, port.in_waiting))
        if data:
            exchange.feed(data)
    ms = (time.monotonic() - started) * 1000
    wiring = (f"is the slave powered, and is its address {slave.unit}? check the A/B wires "
              f"(swap them if unsure) and the bus settings ({settings})")
    if exchange.values is not None:
        return Result("modbus", name, "OK", f"answered {what} in {ms:.0f} ms")
    error = exchange.error
    if error is None:
        if exchange.received:
            return Result("modbus", name, "FAIL", f"only {exchange.received} bytes of the "
                          f"answer to {what} within {wait_s:g} s",
                          f"a wrong baudrate or parity ({settings})? or raise timeout_s")
        return Result("modbus", name, "FAIL", f"no answer to {what} within {wait_s:g} s "
                      "(timeout)", wiring)
    if error.kind == "exception":
        meaning = EXCEPTION_NAMES.get(error.code or 0, "unknown")
        fix = ("the slave is there but has no such registers: check this slave's blocks "
               "(function, address, count) against the device's manual")
        if error.code not in (1, 2, 3):
            fix = "the slave is there but cannot serve the read now; see its manual"
        return Result("modbus", name, "FAIL", f"answered {what} with exception {error.code} "
                      f"({meaning})", fix)
    if error.kind == "crc":
        return Result("modbus", name, "FAIL", f"the answer to {what} was damaged (CRC error)",
                      f"noise or a setting: check {settings}, the A/B wiring, 120 ohm "
                      f"termination at both bus ends, and that no two slaves share unit "
                      f"{slave.unit}")
    return Result("modbus", name, "FAIL", f"a wrong answer to {what}: {error.reason}",
                  "another slave with the same address? an adapter that echoes (set echo: "
                  "true on the bus)?")


# -- clock -----------------------------------------------------------------------------------

STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex up to `status`, then room for the rest of it (about 200 bytes on 64-bit).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 512),
    ]


def adjtimex_status() -> int | None:
    """The kernel's NTP status bits (``adjtimex`` with modes 0 only reads); None: no libc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        if libc.adjtimex(ctypes.byref(timex)) < 0:
            return None
    except (OSError, AttributeError):
        return None
    return int(timex.status)


CommandRunner = Callable[[Sequence[str], float], "CommandOutput"]


@dataclass(frozen=True, slots=True)
class CommandOutput:
    returncode: int
    stdout: str
    stderr: str


def run_command(argv: Sequence[str], timeout_s: float) -> CommandOutput:
    """Run ``argv``; FileNotFoundError when there is no such program."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                          check=False, env={**os.environ, "LC_ALL": "C"})
    return CommandOutput(done.returncode, done.stdout, done.stderr)


def timedatectl_synchronised(run: CommandRunner, timeout_s: float) -> bool | None:
    """``timedatectl``'s NTPSynchronized; None when it cannot say (no systemd here)."""
    try:
        out = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = out.stdout.strip()
    if out.returncode != 0 or answer not in ("yes", "no"):
        return None
    return answer == "yes"


@dataclass(frozen=True, slots=True)
class ClockSources:
    """Where the clock check looks; tests give fakes."""

    now: Callable[[], float] = time.time
    timedatectl: Callable[[float], bool | None] = field(
        default=lambda timeout_s: timedatectl_synchronised(run_command, timeout_s))
    adjtimex: Callable[[], int | None] = adjtimex_status


def check_clock(sources: ClockSources, timeout_s: float) -> list[Result]:
    now = dt.datetime.fromtimestamp(sources.now(), tz=dt.UTC)
    shown = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    ntp_fix = ("check the network, then `timedatectl timesync-status`; "
               "`sudo timedatectl set-ntp true` turns NTP on")
    if now < CLOCK_FLOOR:
        return [Result("clock", "clock", "FAIL",
                       f"the clock says {shown}: certainly wrong (before "
                       f"{CLOCK_FLOOR:%Y-%m-%d}); NTP has not synchronised it", ntp_fix)]
    synced = sources.timedatectl(timeout_s)
    how = "timedatectl"
    if synced is None:
        status = sources.adjtimex()
        if status is None:
            return [Result("clock", "clock", "WARN",
                           f"{shown}; cannot tell whether it is synchronised",
                           "compare with a phone's clock; `timedatectl` says more on the Pi")]
        synced = not status & STA_UNSYNC
        how = "the kernel (adjtimex)"
    if synced:
        return [Result("clock", "clock", "OK", f"synchronised per {how}, {shown}")]
    return [Result("clock", "clock", "WARN",
                   f"{shown} but not synchronised per {how}: after a power cut it may be "
                   "behind, and so would readings' times", ntp_fix)]


# -- disk and spool --------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def spool_file_bytes(data_dir: Path) -> int:
    total = 0
    for name in ("spool.sqlite3", "spool.sqlite3-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += (data_dir / name).stat().st_size
    return total


def check_disk(cfg: Config) -> list[Result]:
    data_dir = cfg.data_dir
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    spool_now = spool_file_bytes(data_dir)
    headroom = max(0, cfg.spool.max_bytes - spool_now)
    note = "" if where == data_dir else f" ({data_dir} does not exist yet)"
    found = (f"{_size(usage.free)} free of {_size(usage.total)} ({pct:.0f} %) for "
             f"{data_dir}{note}")
    clean = "make room (`sudo journalctl --vacuum-size=100M`, old files in /home, /var/log)"
    if pct < DISK_FAIL_PCT:
        return [Result("disk", "disk", "FAIL", found, clean)]
    if usage.free < headroom:
        return [Result("disk", "disk", "FAIL",
                       f"{found}, but the spool may grow by {_size(headroom)} more "
                       f"(spool.max_bytes {_size(cfg.spool.max_bytes)})",
                       f"{clean}, or lower spool.max_bytes")]
    if pct < DISK_WARN_PCT:
        return [Result("disk", "disk", "WARN", found, clean)]
    return [Result("disk", "disk", "OK", found)]


def _held_rows(db: sqlite3.Connection) -> int:
    """Readings stamped before the clock was believed (a spool of an older version: none)."""
    try:
        first, last = db.execute("SELECT min(id), max(id) FROM held").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return 0 if first is None else int(last) - int(first) + 1


def check_spool(cfg: Config, now: Callable[[], float] = time.time) -> list[Result]:
    path = cfg.data_dir / "spool.sqlite3"
    if not path.exists():
        return [Result("disk", "spool", "OK",
                       f"no spool yet at {path}: the gateway has not run with this data_dir")]
    size = spool_file_bytes(cfg.data_dir)
    limit = cfg.spool.max_bytes
    # Read-only, and never waiting long for the gateway's write lock.
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error as exc:
        return [Result("disk", "spool", "FAIL", f"cannot open {path}: {exc}",
                       "check its owner and permissions (`ls -l` it); run doctor with sudo")]
    try:
        first, last = db.execute("SELECT min(id), max(id) FROM spool").fetchone()
        oldest = db.execute("SELECT line FROM spool ORDER BY id LIMIT 1").fetchone()
        evicted = db.execute(
            "SELECT value FROM counters WHERE name = 'evicted'").fetchone()
        held = _held_rows(db)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return [Result("disk", "spool", "WARN", f"{path} is busy ({exc})",
                           "the gateway is writing a lot right now; run doctor again")]
        return [Result("disk", "spool", "FAIL", f"{path}: {exc}",
                       "not a spool of this gateway, or damaged: stop the gateway and move "
                       "the file aside")]
    except sqlite3.DatabaseError as exc:
        return [Result("disk", "spool", "FAIL", f"{path}: {exc}",
                       "damaged: stop the gateway, move the file aside, start it again")]
    finally:
        db.close()
    # Rows leave from the front: ids give the count without reading the table.
    rows = 0 if first is None else int(last) - int(first) + 1
    parts = [f"{_size(size)} of {_size(limit)}", f"about {rows} readings waiting"]
    age_s: float | None = None
    if oldest is not None:
        stamp = split_time(str(oldest[0]))[1]
        if stamp is not None:
            age_s = now() - stamp / 1e9
            parts.append(f"the oldest from {_age(max(0.0, age_s))} ago")
    if held:
        parts.append(f"about {held} held until the clock is synchronised")
    if evicted is not None and int(evicted[0]):
        parts.append(f"{int(evicted[0])} dropped so far because it was full")
    found = ", ".join(parts)
    if size >= SPOOL_FULL_PCT / 100 * limit:
        return [Result("disk", "spool", "FAIL", f"nearly full: {found}",
                       "readings are not reaching InfluxDB (see the influx check), so the "
                       "oldest are dropped; or raise spool.max_bytes")]
    if age_s is not None and age_s > SPOOL_STALE_S:
        return [Result("disk", "spool", "WARN", found,
                       "readings are not reaching InfluxDB: see the influx check and "
                       "`journalctl -u garden-gateway -n 50`")]
    return [Result("disk", "spool", "OK", found)]


# -- systemd ---------------------------------------------------------------------------------

_NO_SYSTEMD = ("not been booted with systemd", "Failed to connect to bus",
               "System has not been booted")


def check_systemd(unit: str, run: CommandRunner, timeout_s: float) -> list[Result]:
    name = f"systemd {unit}"
    status_fix = f"on the Pi: `systemctl status {unit}`"
    try:
        out = run(["systemctl", "show", unit, "--property=LoadState,ActiveState,SubState,"
                   "UnitFileState,NRestarts,ActiveEnterTimestamp,Result"], timeout_s)
    except FileNotFoundError:
        return [Result("systemd", name, "WARN", "no systemctl: cannot ask systemd here",
                       status_fix)]
    except subprocess.TimeoutExpired:
        return [Result("systemd", name, "WARN", f"systemctl did not answer in {timeout_s:g} s",
                       f"try `systemctl status {unit}`")]
    said = out.stdout + out.stderr
    if any(s in said for s in _NO_SYSTEMD):
        return [Result("systemd", name, "WARN",
                       "cannot ask systemd here (it is not running as init: a container?)",
                       status_fix)]
    props = dict(line.partition("=")[::2] for line in out.stdout.splitlines() if "=" in line)
    if out.returncode != 0 or "ActiveState" not in props:
        return [Result("systemd", name, "WARN",
                       f"systemctl failed ({out.returncode}): {said.strip()[:120]}",
                       status_fix)]
    if props.get("LoadState") == "not-found":
        return [Result("systemd", name, "WARN", f"{unit}.service is not installed",
                       "install it: `sudo systemd/install.sh` in the garden-gateway checkout "
                       "(or give --unit if it has another name)")]
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    restarts = int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else 0
    enabled = props.get("UnitFileState", "")
    since = props.get("ActiveEnterTimestamp", "")
    logs = f"`journalctl -u {unit} -n 50` says why"
    if active == "failed":
        return [Result("systemd", name, "FAIL",
                       f"failed (result {props.get('Result', '?')}, {restarts} restarts)",
                       f"{logs}; then `sudo systemctl restart {unit}`")]
    if sub == "auto-restart":
        return [Result("systemd", name, "FAIL",
                       f"crashing and restarting ({restarts} restarts so far)", logs)]
    if active != "active":
        return [Result("systemd", name, "WARN", f"{active} ({sub})",
                       f"start it: `sudo systemctl start {unit}`")]
    found = f"active ({sub}) since {since or '?'}, {enabled or 'enablement unknown'}"
    if enabled not in ("enabled", "enabled-runtime", "static"):
        return [Result("systemd", name, "WARN", f"{found}: will not start after a power cut",
                       f"`sudo systemctl enable {unit}`")]
    if restarts:
        return [Result("systemd", name, "WARN",
                       f"{found}, restarted {restarts} times after a crash",
                       f"`journalctl -u {unit} -b | grep -i -B2 -A20 traceback` shows why")]
    return [Result("systemd", name, "OK", found)]


# -- the gateway's API -----------------------------------------------------------------------


def check_api(cfg: Config, timeout_s: float) -> list[Result]:
    api = cfg.api
    if not api.enabled:
        return [Result("api", "api", "OK", "disabled in the config (api.enabled: false)")]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(api.host,  # noqa: S104
                                                                      api.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{api.port}/health"
    name = f"api {url}"
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.ConnectError:
        return [Result("api", name, "WARN", "nothing answers: the gateway is not running here",
                       "`sudo systemctl status garden-gateway`")]
    except httpx.HTTPError as exc:
        return [Result("api", name, "WARN", f"{type(exc).__name__}: {exc}",
                       "`sudo systemctl status garden-gateway`")]
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or "status" not in body:
        return [Result("api", name, "FAIL", f"answered {response.status_code}, not as the "
                       "gateway does: another program has this port",
                       "change api.port, or stop the other program (`sudo ss -ltnp`)")]
    uptime = body.get("uptime_s")
    up = f", up {_age(float(uptime))}" if isinstance(uptime, int | float) else ""
    if body["status"] != "ok":
        return [Result("api", name, "WARN", f"the gateway says {body['status']!r}{up}",
                       "it is shutting down; `sudo systemctl status garden-gateway`")]
    return [Result("api", name, "OK", f"the running gateway answers{up}")]


# -- the run ---------------------------------------------------------------------------------


async def run_doctor(
    config_path: Path,
    options: Options = Options(),
    *,
    env: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    clock: ClockSources | None = None,
    run: CommandRunner = run_command,
) -> Report:
    environ = os.environ if env is None else env
    notes: list[str] = []
    full_env = doctor_env(env_file, environ, notes)
    config_result, loaded = check_config(config_path, full_env, notes)
    t = options.timeout_s
    skip = options.skip
    jobs: list[Any] = []

    def add(check: str, name: str, budget: float, fn: Callable[[], list[Result]]) -> None:
        if check not in skip:
            jobs.append(_guarded(check, name, budget, fn))

    if loaded is not None:
        cfg = loaded.config
        # A little over the check's own timeouts, so they speak first.
        add("broker", "broker", 2 * t + 1, lambda: check_broker(cfg, t))
        add("influx", "influx", 2 * t + 1, lambda: check_influx(cfg, t))
        for i in range(len(cfg.serial)):
            add("serial", f"serial {cfg.serial[i].name}", t + options.line_wait_s + 1,
                functools.partial(check_serial_source, cfg, i, options.line_wait_s))
        for i, bus in enumerate(cfg.modbus):
            polls = sum(min(bus.timeout_s, t) + bus.turnaround_s + 0.05 for _ in bus.slaves)
            add("serial", f"modbus {bus.name}", t + polls + 1,
                functools.partial(check_modbus_bus, cfg, i, t))
    sources = clock or ClockSources()
    add("clock", "clock", t + 1, lambda: check_clock(sources, t))
    if loaded is not None:
        add("disk", "disk", t, lambda: check_disk(cfg))
        add("disk", "spool", t, lambda: check_spool(cfg))
    add("systemd", f"systemd {options.unit}", t + 1,
        lambda: check_systemd(options.unit, run, t))
    if loaded is not None:
        add("api", "api", t + 1, lambda: check_api(cfg, t))
    outcomes = await asyncio.gather(*jobs)
    results = [config_result]
    if loaded is None:
        results += [Result(c, c, "SKIP", "not checked: it needs a valid config (see above)")
                    for c in ("broker", "influx", "serial", "disk", "api") if c not in skip]
    for outcome in outcomes:
        results.extend(outcome)
    order = {c: i for i, c in enumerate((*CHECKS, "modbus"))}
    order["modbus"] = order["serial"]
    # Stable sort: the checks in their documented order, a bus's slaves after its port.
    results.sort(key=lambda r: order.get(r.check, len(order)))
    return Report(tuple(results), loaded is not None)


# -- command line ----------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds, 0 or more")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds, more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("--timeout", type=_positive_seconds, default=5.0, metavar="S",
                        help="time limit of each network check, in seconds (default 5)")
    parser.add_argument("--line-wait", type=_seconds, default=3.0, metavar="S",
                        help="how long to wait for a line from each line sensor (default 3; "
                             "0: only open the port)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                        help="leave a check out (repeatable); 'serial' covers Modbus buses")
    parser.add_argument("--unit", default=DEFAULT_UNIT,
                        help=f"the systemd unit to ask about (default {DEFAULT_UNIT})")
    parser.add_argument("--env-file", type=Path, default=None,
                        help=f"secrets as KEY=VALUE lines (default {SECRETS_ENV}, "
                             "when it exists); the shell's variables win")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to ``garden-gateway``'s subcommands."""
    parser = subparsers.add_parser(
        "doctor", help="check this park's gateway: config, broker, InfluxDB, serial ports, "
        "clock, disk, service (exit 1 when something fails)",
        description="Check everything the gateway needs, one line each: OK, WARN or FAIL, "
        "what was found and how to fix it. Exit 0 when nothing failed, 1 when something "
        "did, 2 when the config is not valid.")
    add_arguments(parser)
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    options = Options(timeout_s=args.timeout, line_wait_s=args.line_wait, unit=args.unit,
                      skip=frozenset(args.skip))
    report = asyncio.run(run_doctor(args.config, options, env_file=args.env_file))
    print(report.as_json() if args.json else report.text(), flush=True)
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="garden-gateway doctor")
    add_arguments(parser)
    args = parser.parse_args(argv)
    code = cmd_doctor(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
