"""The regency service: a persistent MQTT session on the central broker, the fleet, the API.

Each instance keeps its own session (its own client id) and subscribes to every park's
summary, gateway status and bridge connection: the whole view in each instance (MQTT shared
subscriptions would split it). paho-mqtt runs its network loop in its own thread; every message
is handed to the event loop, where the fleet is changed.

The API (FastAPI, served by uvicorn on ``api.host:api.port``):

- ``GET /api/v1/parks`` (public): one entry per park, worst first: state, since, devices up and
  total, the polders' levels and warning levels (``current`` false when the park is not up: an
  old level is not the water now), Wi-Fi clients, the last summary's time. Nothing names a device.
- ``GET /api/v1/parks/<site>`` (operator): the park's whole latest summary and sources.
- ``GET /api/v1/outages[?site=&since_ns=]`` (operator): parks' spans in ``down``.
- ``GET /metrics`` (operator): per-park gauges in Prometheus text format.
- ``GET /health``.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hmac
import io
import logging
from typing import Any

import paho.mqtt.client as paho
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core import resources
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.park.alerts import Alerter
from gateway.park.outbox import FILE_NAME as OUTBOX_FILE
from gateway.park.outbox import Outbox
from gateway.regency.alertmanager import AlertmanagerSender
from gateway.regency.alerts import RegencyAlerts
from gateway.regency.config import RegencyConfig
from gateway.regency.fleet import FILE_NAME, ORDER, Fleet
from gateway.web.api import CSP
from gateway.web.server import QuietServer
from gateway.web.tls import certificate_for

log = logging.getLogger(__name__)

CHECK_S = 1.0
WITA = dt.timezone(dt.timedelta(hours=8), "WITA")


def month_bounds(month: str) -> tuple[int, int]:
    """``2026-11`` -> the month's first and next month's first instant in WITA, in ns."""
    try:
        year, number = (int(x) for x in month.split("-"))
        start = dt.datetime(year, number, 1, tzinfo=WITA)
    except ValueError as exc:
        raise ValueError(f"month must be YYYY-MM, got {month!r}") from exc
    nxt = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=WITA)
    return int(start.timestamp()) * 10**9, int(nxt.timestamp()) * 10**9


class Regency:
    def __init__(self, config: RegencyConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(config.data_dir / OUTBOX_FILE)
        self.alerter = Alerter(config.alerts, clock=clock, gateway_id="regency",
                               site=config.name, outbox=self.outbox)
        am = config.alertmanager
        self.alertmanager = (AlertmanagerSender(list(am.urls), clock=clock,
                                                resend_s=am.resend_s)
                             if am is not None else None)
        self.alerts = RegencyAlerts(self.alerter, regency=config.name,
                                    alertmanager=self.alertmanager)
        self.fleet = Fleet(config.data_dir / FILE_NAME, clock=clock,
                           stale_after_s=config.stale_after_s,
                           on_transition=self.alerts.transition, on_summary=self.alerts.summary)
        self.connected = False
        self.app = create_app(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None

    # -- MQTT -----------------------------------------------------------------------------

    def _topics(self) -> list[str]:
        p = self.config.topic_prefix
        # The link and the gateway's status first: their retained words arrive before the
        # summaries', so a park whose gateway is down is never "up" for a moment at start.
        return [f"{p}/+/bridge/connection", f"{p}/+/gateway/+/status", f"{p}/+/summary",
                f"{p}/+/+/state"]

    def _client_for(self) -> paho.Client:
        cfg = self.config.mqtt
        v5 = cfg.protocol == "5"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.config.client_id,
                             protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                             clean_session=None if v5 else False)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value()
                                   if cfg.password else None)
        client.reconnect_delay_set(int(max(1, cfg.reconnect_min_s)),
                                   int(max(1, cfg.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("regency: broker refused the connection: %s", reason)
            return
        self.connected = True
        for topic in self._topics():
            client.subscribe(topic, qos=1)
        log.info("regency: connected to %s:%d", self.config.mqtt.host, self.config.mqtt.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        self.connected = False
        log.warning("regency: disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.dispatch, msg.topic, bytes(msg.payload))

    def dispatch(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) == 3 and parts[2] == "summary":
            self.fleet.summary(parts[1], payload)
        elif len(parts) == 5 and parts[2] == "gateway" and parts[4] == "status":
            self.fleet.gateway_status(parts[1], parts[3], payload)
        elif len(parts) == 4 and parts[2:] == ["bridge", "connection"]:
            self.fleet.link(parts[1], payload)
        elif len(parts) == 4 and parts[3] == "state":
            self.fleet.device_state(parts[1], parts[2], payload)

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """MQTT, the staleness check and the API until cancelled."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config.mqtt
        client = self._client = self._client_for()
        properties = None
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = cfg.session_expiry_s
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                             clean_start=False if cfg.protocol == "5" else
                             paho.MQTT_CLEAN_START_FIRST_ONLY, properties=properties)
        client.loop_start()
        api = self.config.api
        servers = [QuietServer(uvicorn.Config(self.app, host=api.host, port=api.port,
                                              log_level="warning", lifespan="off"))]
        cert = certificate_for(api.tls, self.config.data_dir)
        if cert is not None and api.tls is not None:
            servers.append(QuietServer(uvicorn.Config(
                self.app, host=api.host, port=api.tls.port, log_level="warning",
                lifespan="off", ssl_certfile=str(cert.cert), ssl_keyfile=str(cert.key))))
            log.info("regency: HTTPS on port %d, certificate SHA-256 %s", api.tls.port,
                     cert.fingerprint)
        serving = [asyncio.create_task(one.serve(), name="regency.api") for one in servers]
        alerting = asyncio.create_task(self.alerter.run(), name="regency.alerts")
        posting = (asyncio.create_task(self.alertmanager.run(), name="regency.alertmanager")
                   if self.alertmanager is not None else None)
        try:
            while True:
                self.fleet.check()
                await self.clock.sleep(CHECK_S)
        finally:
            for one in servers:
                one.should_exit = True
            alerting.cancel()
            if posting is not None:
                posting.cancel()
            await asyncio.wait([*serving, *(t for t in (alerting, posting) if t is not None)],
                               timeout=5)
            await self.alerter.aclose()
            client.disconnect()
            client.loop_stop()
            self.fleet.close()
            self.outbox.close()

    # -- metrics --------------------------------------------------------------------------

    def metrics_text(self) -> str:
        lines = ["# HELP garden_regency_park_state 1 for each park's state.",
                 "# TYPE garden_regency_park_state gauge"]
        parks = sorted(self.fleet.parks.values(), key=lambda p: p.site)
        for p in parks:
            for state in sorted(ORDER):
                lines.append(f'garden_regency_park_state{{site="{p.site}",state="{state}"}} '
                             f"{1 if p.state == state else 0}")
        lines += ["# HELP garden_regency_park_devices_up Devices up in the park's last summary.",
                  "# TYPE garden_regency_park_devices_up gauge"]
        for e in sorted(self.fleet.listing(), key=lambda e: e["site"]):
            lines.append(f'garden_regency_park_devices_up{{site="{e["site"]}"}} '
                         f'{e["devices_up"]}')
        lines += ["# HELP garden_regency_parks Parks known.", "# TYPE garden_regency_parks gauge",
                  f"garden_regency_parks {len(parks)}",
                  "# HELP garden_regency_mqtt_connected 1 while the central broker is connected.",
                  "# TYPE garden_regency_mqtt_connected gauge",
                  f"garden_regency_mqtt_connected {int(self.connected)}",
                  "# HELP garden_regency_messages_refused_total Messages that were not a park's "
                  "summary, status or link word.",
                  "# TYPE garden_regency_messages_refused_total counter",
                  f"garden_regency_messages_refused_total {self.fleet.refused}"]
        return "\n".join(lines) + "\n"


def create_app(regency: Regency) -> FastAPI:
    app = FastAPI(title="Garden Gateway regency", docs_url=None, redoc_url=None)
    token = regency.config.api.operator_token

    tls = regency.config.api.tls is not None and regency.config.api.tls.enabled

    def operator(request: Request) -> None:
        if tls and request.url.scheme != "https":
            raise HTTPException(status_code=403, detail="operator endpoints are served over "
                                "HTTPS only (api.tls)")
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}" if token is not None else None
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="operator token required",
                                headers={"WWW-Authenticate": "Bearer"})

    Operator = Depends(operator)

    pages = resources.pages_dir()

    @app.middleware("http")
    async def safety_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        else:
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        """The regency's public page: every park, the worst first."""
        return FileResponse(pages / "regency.html", headers={"Cache-Control": "no-cache"})

    @app.get("/operator", include_in_schema=False)
    def operator_page(request: Request) -> Response:
        """The operators' page (token asked in the page; over HTTPS when api.tls is on)."""
        if tls and request.url.scheme != "https":
            return Response("The operators' page is served over HTTPS only (api.tls).\n",
                            status_code=403, media_type="text/plain")
        return FileResponse(pages / "regency-operator.html",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/api/v1/regency")
    def about() -> dict[str, Any]:
        """The regency's name and how to link to each park's own page."""
        return {"name": regency.config.name, "park_url": regency.config.api.park_url}

    app.mount("/static", StaticFiles(directory=pages / "static"), name="static")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "mqtt_connected": regency.connected}

    @app.get("/api/v1/parks")
    def parks() -> list[dict[str, Any]]:
        """Every park, worst first; nothing that names a device."""
        return regency.fleet.listing()

    @app.get("/api/v1/parks/{site}", dependencies=[Operator])
    def park(site: str) -> dict[str, Any]:
        p = regency.fleet.parks.get(site)
        if p is None:
            raise HTTPException(status_code=404, detail=f"no park {site!r}")
        return {"site": site, **p.stored()}

    @app.get("/api/v1/outages", dependencies=[Operator])
    def outages(site: str | None = None, since_ns: int | None = None) -> list[dict[str, Any]]:
        return regency.fleet.outages(site=site, since_ns=since_ns)

    @app.get("/api/v1/report", dependencies=[Operator], response_model=None)
    def report(month: str, format: str = "json") -> Response | list[dict[str, Any]]:
        """Uptime per park and per device over a calendar month in WITA (``month=2026-11``):
        seconds up, down and unobserved, the uptime % of the observed time; ``format=csv``
        for the office's report."""
        try:
            start, end = month_bounds(month)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        rows = regency.fleet.report(start, end)
        if format != "csv":
            return rows
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["month", "site", "device", "up_s", "down_s", "unobserved_s",
                         "uptime_pct"])
        for r in rows:
            writer.writerow([month, r["site"], r["device"] or "", r["up_s"], r["down_s"],
                             r["unobserved_s"], "" if r["uptime_pct"] is None
                             else r["uptime_pct"]])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="uptime-{month}.csv"'})

    @app.get("/metrics", dependencies=[Operator], response_class=PlainTextResponse)
    def metrics() -> str:
        return regency.metrics_text()

    return app
