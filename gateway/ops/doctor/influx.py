"""``influx``: ``/ping``, then an empty write.

InfluxDB 1.x answers an empty ``/write`` with 204 only after checking the credentials, that the
database exists and that the user may write to it, and writes nothing (checked against Debian's
1.6.7 in the tests): no test point in a production database. v2: the bucket is looked up, then
the same empty write. VictoriaMetrics (its /ping has no InfluxDB version, its /api/v1/export
answers) takes any write with 204, even lines it drops: a canary point is written and read back.
"""

from __future__ import annotations

import json
import secrets
import time

import httpx

from gateway.config import Config
from gateway.ops.doctor.config import SECRETS_ENV
from gateway.ops.doctor.runner import LOCAL_HOSTS, Result, size_text

# VictoriaMetrics: the doctor's canary point, one series per gateway.
CANARY_MEASUREMENT = "garden_doctor_canary"
CANARY = f"{CANARY_MEASUREMENT}_value"
CANARY_WAIT_S = 5.0


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
    return host in LOCAL_HOSTS


def check_influx(cfg: Config, timeout_s: float) -> list[Result]:
    i = cfg.influx
    name = f"influx {i.url}"
    if not i.enabled:
        return [Result("influx", "influx", "WARN",
                       "disabled (influx.enabled: false): readings stay in the spool until it "
                       f"is full ({size_text(cfg.spool.max_bytes)})",
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
        if ping.status_code in (200, 204) and version is None and i.api == "v1" and (
                http.get("/api/v1/export", params={"match[]": CANARY}).status_code == 200):
            return _victoria(cfg, http, name)
        if ping.status_code not in (200, 204) or version is None:
            return [Result("influx", name, "FAIL",
                           f"/ping answered {ping.status_code} without an InfluxDB version: "
                           "this is not InfluxDB", "check influx.url (the port: 8086?)")]
        if i.api == "v2":
            return _influx_v2(cfg, http, name, version)
        return _influx_v1(cfg, http, name, version)


def _victoria(cfg: Config, http: httpx.Client, name: str) -> list[Result]:
    """VictoriaMetrics answers 204 to /write even for lines it drops: a canary point is written
    (``garden_doctor_canary``, tagged with the gateway) and must read back."""
    i = cfg.influx
    value = secrets.randbelow(10**9)
    line = f"{CANARY_MEASUREMENT},gateway={cfg.gateway.id} value={value} {time.time_ns()}"
    response = http.post("/write", params={"db": i.database}, content=line.encode())
    if response.status_code != 204:
        return [Result("influx", name, "FAIL", f"VictoriaMetrics refused the canary write: "
                       f"{response.status_code} {_influx_message(response)}",
                       "its log says why")]
    deadline = time.monotonic() + CANARY_WAIT_S
    attempt = 0
    while time.monotonic() < deadline:
        time.sleep(0.5)  # new points are searchable after about a second
        attempt += 1
        # A search that found nothing is cached for a while (seen with 1.79: a read right
        # after the write kept answering empty): each attempt asks a query of its own.
        match = f'{CANARY}{{gateway="{cfg.gateway.id}",gateway!="attempt-{attempt}"}}'
        found = http.get("/api/v1/export", params={"match[]": match})
        if found.status_code == 200 and any(
                value in (json.loads(row).get("values") or [])
                for row in found.text.splitlines() if row.strip()):
            return [Result("influx", name, "OK",
                           f"VictoriaMetrics: a canary point ({CANARY_MEASUREMENT}) written and "
                           "read back; run it with -dedup.minScrapeInterval=1ms "
                           "(docs/operator.md)")]
    return [Result("influx", name, "FAIL",
                   f"VictoriaMetrics answered 204 but the canary point did not arrive within "
                   f"{CANARY_WAIT_S:g} s: it drops lines (outside -retentionPeriod? a clock far "
                   "off?)", "check its -retentionPeriod and this Pi's clock (`timedatectl`)")]


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
