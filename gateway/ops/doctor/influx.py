"""``influx``: ``/ping``, then an empty write.

InfluxDB 1.x answers an empty ``/write`` with 204 only after checking the credentials, that the
database exists and that the user may write to it, and writes nothing (checked against Debian's
1.6.7 in the tests): no test point in a production database. v2: the bucket is looked up, then
the same empty write.
"""

from __future__ import annotations

import httpx

from gateway.config import Config
from gateway.ops.doctor.config import SECRETS_ENV
from gateway.ops.doctor.runner import LOCAL_HOSTS, Result, size_text


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
