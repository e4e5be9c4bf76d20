"""The status API and the pages (FastAPI), served by the gateway process itself.

Routes read the gateway's snapshots, built from each component's ``statistics()``; they never
reach into internals and never change anything. Two kinds of caller:

- anyone on the park's network: ``/``, ``/health``, ``/api/v1/resident``, ``/api/v1/sites``,
  the residents' chart histories and the public event stream; read-only and free of personal
  data, addresses and error texts;
- operators, with the token (``Authorization: Bearer``, or the cookie ``POST /api/v1/session``
  sets): everything else. Without it: 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as FastPath
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from gateway.config import ApiConfig
from gateway.core import resources
from gateway.core.status import (
    DeadLetterView,
    DeviceView,
    Health,
    OutageView,
    PolderList,
    PolderView,
    QuarantineView,
    ResidentView,
    SiteView,
    Status,
)
from gateway.web.auth import COOKIE, OperatorAuth, Throttled
from gateway.web.events import EventHub, TooManyClients

# Found the same way in a checkout, an editable install and a wheel; missing pages are an error
# naming the path (resources.MissingFileError) when this module is imported, not a quiet 404.
PAGES = resources.pages_dir()
RANGES: dict[str, int] = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "48h": 2 * 86400,
                          "7d": 7 * 86400, "30d": 30 * 86400}
# The pages load only from the gateway itself: no inline script, no other origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class StatusProvider(Protocol):
    stopping: bool

    @property
    def uptime_s(self) -> float: ...

    def status(self) -> Status: ...

    def devices_view(self, *, site: str | None = None, kind: str | None = None,
                     state: str | None = None, origin: Sequence[str] | None = None,
                     include_removed: bool = False, limit: int | None = None,
                     offset: int = 0) -> tuple[int, list[DeviceView]]: ...

    def forget_device(self, device: str) -> str: ...
    def acknowledge_disk_notice(self, notice_id: int) -> bool: ...

    def outages_view(self, *, device: str | None = None, site: str | None = None,
                     since_ns: int | None = None, ongoing: bool | None = None,
                     limit: int = 100) -> list[OutageView]: ...

    def sites(self) -> list[str]: ...

    def site_view(self, site: str) -> SiteView | None: ...

    def resident_view(self) -> ResidentView: ...

    def polder_view(self, *, operator: bool) -> PolderList: ...

    def siren_command(self, polder: str, action: str, for_s: float) -> PolderView | None: ...

    def history_view(self, device: str, field: str, start_ns: int, end_ns: int
                     ) -> tuple[int, list[tuple[int, float, float, float]]]: ...

    def history_is_public(self, device: str, field: str) -> bool: ...

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]: ...

    async def quarantined(self, limit: int) -> list[dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def now_ns(self) -> int: ...


class Problem(BaseModel):
    detail: str


class Session(BaseModel):
    operator: bool
    expires_in_s: int | None = Field(description="Until the cookie ends; None for a bearer token")


class SessionRequest(BaseModel):
    token: str = Field(min_length=1, max_length=4096)


class SirenCommand(BaseModel):
    action: Literal["silence", "resume", "test"] = Field(
        description="silence: off for for_s even if the level asks; resume: follow the level "
        "again; test: on for the siren's test_s")
    for_s: float = Field(3600.0, ge=60, le=86400, description="How long silence lasts")


class Acknowledged(BaseModel):
    id: int
    acknowledged: bool


class Forgotten(BaseModel):
    id: str
    forgotten: bool


class HistoryView(BaseModel):
    device: str
    field: str
    range: str
    start_ns: int
    end_ns: int
    step_s: int = Field(description="Bucket width of the rollup tier that answered")
    points: list[tuple[int, float, float, float]] = Field(
        description="[bucket start ns, average, minimum, maximum], oldest first")


def create_app(gateway: StatusProvider, *, config: ApiConfig, auth: OperatorAuth,
               events: EventHub, pages_dir: Path = PAGES) -> FastAPI:
    app = FastAPI(
        # FastAPI's own /docs and /redoc load their files from a CDN and run an inline script:
        # blank in a park (no internet) and under this CSP. /docs is the gateway's own page.
        docs_url=None, redoc_url=None,
        title="Garden Gateway",
        summary="One park's gateway: residents' view, devices, uptime, spool and counts.",
        version="1",
        openapi_tags=[
            {"name": "public", "description": "Read-only, safe on the park's open network"},
            {"name": "operator", "description": "Needs the operator token (401 without it)"},
            {"name": "session", "description": "The operator page's sign-in: a cookie for the "
             "token"},
        ],
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET"], allow_headers=["Authorization"],
                           allow_credentials=False)

    bearer = HTTPBearer(auto_error=False, description="The operator token")
    cookie = APIKeyCookie(name=COOKIE, auto_error=False,
                          description="Set by POST /api/v1/session")
    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "No or wrong operator token"},
        429: {"model": Problem, "description": "Too many wrong tokens from this address; "
              "see Retry-After"}}
    # For routes answering something else than JSON (/metrics): FastAPI would file the JSON
    # refusals under the route's own media type.
    problem_json = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    unauthorized_plain: dict[int | str, dict[str, Any]] = {
        code: {"description": answer["description"], "content": problem_json}
        for code, answer in unauthorized.items()}

    def check_token(given: str | None, request: Request) -> bool:
        try:
            return auth.check_token(given, request.client.host if request.client else None)
        except Throttled as exc:
            raise HTTPException(status_code=429, detail=str(exc),
                                headers={"Retry-After": str(exc.retry_after_s)}) from exc

    def is_operator(credentials: HTTPAuthorizationCredentials | None,
                    session: str | None, request: Request) -> bool:
        if credentials is not None and check_token(credentials.credentials, request):
            return True
        return auth.session_ok(session)

    def caller(request: Request,
               credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
               session: str | None = Depends(cookie)) -> bool:
        return is_operator(credentials, session, request)

    def refuse() -> HTTPException:
        detail = ("operator token required" if auth.configured else
                  "no operator token is configured on this gateway; set api.operator_token "
                  "(or GARDEN_GATEWAY_API__OPERATOR_TOKEN, or api.operator_token_file)")
        return HTTPException(status_code=401, detail=detail,
                             headers={"WWW-Authenticate": "Bearer"})

    def operator(allowed: bool = Depends(caller)) -> None:
        if not allowed:
            raise refuse()

    Operator = Depends(operator)

    @app.middleware("http")
    async def safety_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith(("/api/", "/metrics", "/health")):
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        else:
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- public ------------------------------------------------------------------------

    @app.get("/health", response_model=Health, tags=["public"])
    async def health() -> Health:
        """Liveness: the process answers and its loop is running."""
        # On the loop itself (async, no worker thread) and without building the whole status:
        # it says the loop runs, and answers fast while a burst is read.
        return Health(status="stopping" if gateway.stopping else "ok",
                      uptime_s=round(gateway.uptime_s, 3))

    @app.get("/api/v1/resident", response_model=ResidentView, tags=["public"])
    async def resident() -> ResidentView:
        """The park for its residents: Wi-Fi in words, polder level, garden, chart series."""
        return gateway.resident_view()

    @app.get("/api/v1/polder", response_model=PolderList, response_model_exclude_unset=True,
             tags=["public"])
    async def polder(allowed: bool = Depends(caller)) -> PolderList:
        """Each polder: level, warning level and since when, the rise per hour, the time to
        the next level with its band (absent when flat, falling or untrusted), the sensor's
        quality. With the operator token also its device, field, thresholds and fault."""
        return gateway.polder_view(operator=allowed)

    @app.post("/api/v1/polder/{polder}/siren", response_model=PolderView,
              response_model_exclude_unset=True, tags=["operator"], dependencies=[Operator],
              responses={**unauthorized,
                         400: {"model": Problem, "description": "The body is not JSON"},
                         404: {"model": Problem, "description": "No siren at that polder"}})
    async def siren(polder: str, command: SirenCommand) -> PolderView:
        """Silence a polder's siren for a time, let it follow the level again, or test it."""
        view = gateway.siren_command(polder, command.action, command.for_s)
        if view is None:
            raise HTTPException(status_code=404, detail=f"no siren at polder {polder!r}")
        return view

    @app.get("/api/v1/sites", response_model=list[str], tags=["public"])
    async def sites() -> list[str]:
        return gateway.sites()

    @app.get("/api/v1/sites/{site}", response_model=SiteView, tags=["public"],
             responses={404: {"model": Problem, "description": "No device at that site"}})
    async def site(site: str) -> SiteView:
        """A park at a glance: APs up/total, clients now, sensors up/total, uptime."""
        view = gateway.site_view(site)
        if view is None:
            raise HTTPException(status_code=404, detail=f"no device at site {site!r}")
        return view

    @app.get("/api/v1/history", response_model=HistoryView, tags=["public", "operator"],
             responses=unauthorized)
    async def history(allowed: bool = Depends(caller),
                      device: str = Query(min_length=1, max_length=200),
                      field: str = Query(min_length=1, max_length=200),
                      range: Literal["1h", "6h", "24h", "48h", "7d", "30d"] = "24h",
                      ) -> HistoryView:
        """A field's rollups from the gateway's own store (works with InfluxDB down).

        The series the residents' page draws are public; any other needs the token."""
        if not allowed and not gateway.history_is_public(device, field):
            raise refuse()
        end = gateway.now_ns()
        start = end - RANGES[range] * 1_000_000_000
        step, points = gateway.history_view(device, field, start, end)
        return HistoryView(device=device, field=field, range=range, start_ns=start,
                           end_ns=end, step_s=step, points=points)

    @app.get("/api/v1/events", tags=["public", "operator"],
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": (
                 "Server-Sent Events. Public: `resident` (the whole /api/v1/resident body). "
                 "With the token also `state` {device, state, since_ns, cause} and `reading` "
                 "{device, time_ns, fields}. `resync` means events were lost: fetch again.")},
                 503: {"model": Problem}})
    async def stream_events(allowed: bool = Depends(caller)) -> StreamingResponse:
        """Live updates; browsers reconnect by themselves (EventSource)."""
        try:
            body: AsyncIterator[bytes] = events.stream(operator=allowed)
        except TooManyClients as exc:
            raise HTTPException(status_code=503, detail=str(exc),
                                headers={"Retry-After": "30"}) from exc
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    # -- the operator's session ----------------------------------------------------------

    @app.post("/api/v1/session", status_code=204, tags=["session"], responses={
        **unauthorized, 400: {"model": Problem, "description": "The body is not JSON"},
        413: {"model": Problem, "description": "The body is larger than the API accepts"}})
    def sign_in(body: SessionRequest, request: Request, response: Response) -> None:
        """Trade the token for an HttpOnly cookie (the operator page's sign-in)."""
        if not check_token(body.token, request):
            raise refuse()
        response.set_cookie(COOKIE, auth.new_session(), max_age=auth.max_age_s,
                            httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")

    @app.get("/api/v1/session", response_model=Session, tags=["session"],
             responses=unauthorized)
    def session(request: Request,
                credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                cookie_value: str | None = Depends(cookie)) -> Session:
        """200 when the caller is an operator (cookie or bearer token), else 401."""
        if not is_operator(credentials, cookie_value, request):
            raise refuse()
        return Session(operator=True, expires_in_s=None if credentials else auth.max_age_s)

    @app.delete("/api/v1/session", status_code=204, tags=["session"])
    def sign_out(response: Response, cookie_value: str | None = Depends(cookie)) -> None:
        """Sign out: the session is revoked on the gateway, not just the cookie dropped."""
        auth.revoke(cookie_value)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    # -- operator ------------------------------------------------------------------------

    @app.get("/api/v1/status", response_model=Status, tags=["operator"],
             dependencies=[Operator], responses=unauthorized)
    def status() -> Status:
        """Connections, spool, and counts of readings since the gateway started."""
        return gateway.status()

    # async: the registry's SQLite connection belongs to the event loop's thread.
    @app.get("/api/v1/devices", response_model=list[DeviceView], tags=["operator"],
             dependencies=[Operator], responses={**unauthorized, 200: {"headers": {
                 "X-Total-Count": {"description": "How many devices match (before limit and "
                                   "offset)", "schema": {"type": "integer"}}}}})
    async def devices(
            response: Response, site: str | None = None, kind: str | None = None,
            state: Literal["unknown", "online", "offline", "unmonitored"] | None = None,
            origin: list[Literal["config", "discovered", "gateway", "removed"]] | None = Query(
                None, description="Repeat for several; removed ones only when asked"),
            include_removed: bool = False,
            limit: int = Query(500, ge=1, le=1000),
            offset: int = Query(0, ge=0, le=1_000_000)) -> list[DeviceView]:
        """Devices with their state, since when, last seen, latest values, uptime %: at most
        ``limit`` from ``offset`` (by site, kind, id); ``X-Total-Count`` says how many
        match."""
        total, page = gateway.devices_view(site=site, kind=kind, state=state, origin=origin,
                                           include_removed=include_removed, limit=limit,
                                           offset=offset)
        response.headers["X-Total-Count"] = str(total)
        return page

    @app.delete("/api/v1/devices/{device}", response_model=Forgotten, tags=["operator"],
                dependencies=[Operator], responses={
                    **unauthorized,
                    404: {"model": Problem, "description": "No such device"},
                    409: {"model": Problem, "description": "In the device list (or the "
                          "gateway itself): never forgotten; remove it from the config"}})
    async def forget_device(device: str = FastPath(max_length=256)) -> Forgotten:
        """Forget a discovered device: off the device list and the registry (its outages
        stay in the history). It is discovered again if it sends again."""
        outcome = gateway.forget_device(device)
        if outcome == "unknown":
            raise HTTPException(status_code=404, detail=f"no device {device!r}")
        if outcome == "listed":
            raise HTTPException(status_code=409, detail=f"{device!r} is in the device list "
                                "(or is this gateway): remove it from the config instead")
        return Forgotten(id=device, forgotten=True)

    @app.post("/api/v1/disk/notices/{notice_id}/acknowledge", response_model=Acknowledged,
              tags=["operator"], dependencies=[Operator], responses={
                  **unauthorized, 404: {"model": Problem, "description": "No such notice"}})
    async def acknowledge_disk_notice(
            notice_id: int = FastPath(ge=1, le=2**31)) -> Acknowledged:
        """An operator has read that a damaged file was set aside at start: it leaves the
        status (``disk.notices``) and doctor; it stays in ``data_dir/disk-notices.json``."""
        if not gateway.acknowledge_disk_notice(notice_id):
            raise HTTPException(status_code=404, detail=f"no disk notice {notice_id}")
        return Acknowledged(id=notice_id, acknowledged=True)

    @app.get("/api/v1/outages", response_model=list[OutageView], tags=["operator"],
             dependencies=[Operator], responses=unauthorized)
    async def outages(device: str | None = None, site: str | None = None,
                      since_ns: int | None = Query(None, ge=0, le=2**63 - 1,
                                                   description="Still going on then"),
                      ongoing: bool | None = None,
                      limit: int = Query(100, ge=1, le=10_000)) -> list[OutageView]:
        """Outages, newest first."""
        return gateway.outages_view(device=device, site=site, since_ns=since_ns,
                                    ongoing=ongoing, limit=limit)

    @app.get("/api/v1/dead-letters", response_model=list[DeadLetterView], tags=["operator"],
             dependencies=[Operator], responses=unauthorized)
    async def dead_letters(limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        """Input the gateway could not read (malformed, oversized, wrong type), newest first."""
        return await gateway.dead_letters(limit)

    @app.get("/api/v1/quarantine", response_model=list[QuarantineView], tags=["operator"],
             dependencies=[Operator], responses=unauthorized)
    async def quarantine(limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        """Lines InfluxDB refused for good (type conflicts, unparsable), newest first."""
        return await gateway.quarantined(limit)

    metrics_deps = [] if config.metrics_public else [Operator]

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operator"],
             dependencies=metrics_deps, responses=unauthorized_plain)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: ingest, spool, forwarder, per-source errors, devices."""
        return PlainTextResponse(gateway.metrics_text(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- the pages ----------------------------------------------------------------------

    if config.pages and pages_dir.is_dir():
        @app.get("/", include_in_schema=False)
        def resident_page() -> FileResponse:
            return FileResponse(pages_dir / "index.html", headers={"Cache-Control": "no-cache"})

        @app.get("/operator", include_in_schema=False)
        def operator_page() -> FileResponse:
            # The page itself holds nothing: it asks GET /api/v1/session before showing data.
            return FileResponse(pages_dir / "operator.html",
                                headers={"Cache-Control": "no-cache"})

        @app.get("/docs", include_in_schema=False)
        def api_docs_page() -> FileResponse:
            # The operations, laid out from /openapi.json by /static/apidocs.js: offline.
            return FileResponse(pages_dir / "apidocs.html",
                                headers={"Cache-Control": "no-cache"})

        app.mount("/static", StaticFiles(directory=pages_dir / "static"), name="static")

    return app
