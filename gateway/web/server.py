"""The API's HTTP and HTTPS servers (uvicorn), with the holds a park's open network needs.

- Connections are capped: per client address (``api.max_connections_per_client``) and in all
  (``api.max_connections``, else the open-file limit minus a reserve for the gateway's own
  files). A connection over the per-address cap is closed at once; when the global cap is
  reached, the connection that has waited longest without sending a request head gives its
  place to the new one (else the new one is closed). Either way it never holds a file long.
- A connection must send a complete request head within ``api.header_timeout_s`` of
  connecting (and of its last answer); the head is at most ``api.max_header_bytes``.
- Request bodies are limited before they are read: ``api.max_body_bytes`` for POST/PUT/PATCH,
  nothing for other methods; a Content-Length over it is 413 without reading, a chunked body is
  counted as it arrives and cut off; the body must arrive within ``api.body_timeout_s``.
- With ``api.tls``: plain HTTP keeps only what is public (credentials sent there are dropped
  unread); every other path answers 308 to the same path on HTTPS. HTTPS answers carry HSTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.config import ApiConfig

log = logging.getLogger(__name__)

# Files kept free for the gateway itself (SQLite, InfluxDB and broker sockets, a salvage's
# copy, the journal) on top of those open when the server starts.
FILE_RESERVE = 96
# The listen queue, and so how many connections asyncio accepts in one go before any of them
# reaches the caps: each listener's burst is kept free on top of the reserve.
BACKLOG = 64
LISTENERS = 2
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

App = ASGIApp


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway handles signals in one place.

    ``listening`` is set once its sockets accept connections (READY=1 waits for it).
    """

    def __init__(self, config: uvicorn.Config, *, handshake_timeout_s: float | None = None
                 ) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self.handshake_timeout_s = handshake_timeout_s

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:
            self._check_port()
        loop = asyncio.get_running_loop()
        if self.handshake_timeout_s is not None and self.config.ssl is not None:
            # uvicorn has no setting for it (asyncio's default is 60 s): a TLS client that
            # never finishes its handshake must go as soon as one that never sends its head.
            create_server = loop.create_server
            setattr(loop, "create_server", functools.partial(  # noqa: B010
                create_server, ssl_handshake_timeout=self.handshake_timeout_s))
            try:
                await super().startup(sockets)
            finally:
                delattr(loop, "create_server")
        else:
            await super().startup(sockets)
        if self.started:
            self.listening.set()

    def _check_port(self) -> None:
        """Bind once ourselves first: uvicorn answers a taken port with sys.exit(1) and a line
        on stderr; this raises the OSError (EADDRINUSE: `garden-gateway run` names api.port)."""
        host, port = str(self.config.host), int(self.config.port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}"
                              ) from exc

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target,
                        exc)
    return soft


def open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


class ConnectionGuard:
    """Counts the API's connections (both listeners) and decides who may hold one."""

    def __init__(self, *, max_connections: int, per_client: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.per_client = per_client
        self.header_timeout_s = header_timeout_s
        self.by_client: dict[str, int] = {}
        self.total = 0
        # Connections with no request in progress, the longest waiting first.
        self.waiting: dict[GuardedH11Protocol, None] = {}
        self.refused_per_client = 0
        self.refused_full = 0
        self.evicted = 0
        self.head_timeouts = 0

    @classmethod
    def for_config(cls, config: ApiConfig) -> ConnectionGuard:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = ((soft if soft != resource.RLIM_INFINITY else 1 << 20) - open_files()
                 - FILE_RESERVE - LISTENERS * BACKLOG)
        cap = max(8, limit)
        if config.max_connections is not None:
            cap = min(cap, config.max_connections)
        return cls(max_connections=cap, per_client=config.max_connections_per_client,
                   header_timeout_s=config.header_timeout_s)

    def admit(self, proto: GuardedH11Protocol, client: str) -> bool:
        if self.by_client.get(client, 0) >= self.per_client:
            self.refused_per_client += 1
            return False
        if self.total >= self.max_connections:
            victim = next(iter(self.waiting), None)
            if victim is None:
                self.refused_full += 1
                return False
            self.evicted += 1
            victim.drop()
        self.total += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        self.waiting[proto] = None
        return True

    def release(self, proto: GuardedH11Protocol, client: str) -> None:
        self.waiting.pop(proto, None)
        self.total -= 1
        left = self.by_client.get(client, 1) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)

    def statistics(self) -> dict[str, int]:
        return {"connections": self.total, "max_connections": self.max_connections,
                "refused_per_client": self.refused_per_client,
                "refused_full": self.refused_full, "evicted": self.evicted,
                "head_timeouts": self.head_timeouts}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection caps and a timeout for the request head."""

    guard: ConnectionGuard  # set on the subclass made per gateway (see ``protocol_for``)

    _admitted = False
    _released = False
    _head_timer: asyncio.TimerHandle | None = None
    _peer = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.transport = transport
        if not self.guard.admit(self, self._peer):
            transport.abort()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._cancel_head_timer()
        if not self._released:
            self._released = True
            self.guard.release(self, self._peer)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:
            # A complete request head: it is busy now, not waiting.
            self._cancel_head_timer()
            self.guard.waiting.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._admitted and not self.transport.is_closing() and (
                self.cycle is None or self.cycle.response_complete):
            self.guard.waiting.pop(self, None)
            self.guard.waiting[self] = None
            self._arm_head_timer()

    def drop(self) -> None:
        """Close at once (its place is needed, or its head did not come in time)."""
        self._cancel_head_timer()
        if not self._released:
            self._released = True
            self.guard.release(self, self._peer)
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered
        self.guard.head_timeouts += 1
        self.drop()


def protocol_for(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    return type("GatewayH11Protocol", (GuardedH11Protocol,), {"guard": guard})


# -- ASGI wrappers ------------------------------------------------------------------------


async def _answer(send: Send, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Bodies limited before they are read, and read within a time limit."""

    def __init__(self, app: App, *, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.refused = 0
        self.timeouts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes if scope["method"] in BODY_METHODS else 0
        length: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = limit + 1
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and length > limit:
            self.refused += 1
            await _answer(send, 413, b'{"detail":"request body too large"}')
            return
        if not chunked and not length:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    body += message.get("body", b"")
                    if len(body) > limit:
                        self.refused += 1
                        await _answer(send, 413, b'{"detail":"request body too large"}')
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            self.timeouts += 1
            await _answer(send, 408, b'{"detail":"request body too slow"}')
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            result: Message = await receive()
            return result

        await self.app(scope, replay, send)


class PlainHttp:
    """The plain-HTTP listener when TLS is on: public paths only, and never a credential."""

    PUBLIC = frozenset({"/", "/health", "/api/v1/resident", "/api/v1/sites", "/api/v1/events"})
    PUBLIC_PREFIXES = ("/static/", "/api/v1/sites/")

    def __init__(self, app: App, *, https_port: int,
                 history_is_public: Callable[[str, str], bool]) -> None:
        self.app = app
        self.https_port = https_port
        self.history_is_public = history_is_public
        self.redirected = 0

    def public(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in self.PUBLIC or path.startswith(self.PUBLIC_PREFIXES):
            return scope["method"] in ("GET", "HEAD")
        if path == "/api/v1/history" and scope["method"] in ("GET", "HEAD"):
            query = parse_qs(scope["query_string"].decode("latin-1"))
            device, field = query.get("device", [""])[0], query.get("field", [""])[0]
            return bool(device and field) and self.history_is_public(device, field)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.public(scope):
            # Whatever credential came in clear is dropped unread: public stays public.
            headers = [(k, v) for k, v in scope["headers"]
                       if k not in (b"authorization", b"cookie")]
            await self.app({**scope, "headers": headers}, receive, send)
            return
        self.redirected += 1
        await _answer(send, 308, b'{"detail":"the operator side is served over HTTPS"}',
                      [(b"location", self.location(scope).encode("latin-1"))])

    def location(self, scope: Scope) -> str:
        host = ""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        hostname: str | None = None
        with contextlib.suppress(ValueError):
            hostname = urlsplit("//" + host).hostname
        if not hostname:
            server = scope.get("server") or ("localhost", 0)
            hostname = str(server[0])
        if ":" in hostname:
            hostname = f"[{hostname}]"
        port = "" if self.https_port == 443 else f":{self.https_port}"
        raw = scope.get("raw_path") or scope["path"].encode()
        target = raw.decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        return f"https://{hostname}{port}{target}"


class Hsts:
    """Strict-Transport-Security on every HTTPS answer."""

    def __init__(self, app: App, *, max_age_s: int) -> None:
        self.app = app
        self.value = f"max-age={max_age_s}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"strict-transport-security", self.value)]}
            await send(message)

        await self.app(scope, receive, send_with_hsts)


# -- building the servers -------------------------------------------------------------------


class ApiServers:
    """The plain-HTTP server and, with TLS, the HTTPS one, sharing one connection guard."""

    def __init__(self, app: App, config: ApiConfig, *,
                 history_is_public: Callable[[str, str], bool],
                 tls_context: ssl.SSLContext | None = None,
                 guard: ConnectionGuard | None = None) -> None:
        self.guard = guard or ConnectionGuard.for_config(config)
        self.body = BodyLimit(app, max_body_bytes=config.max_body_bytes,
                              body_timeout_s=config.body_timeout_s)
        tls = config.tls if config.tls is not None and config.tls.enabled else None
        self.plain: PlainHttp | None = None
        http_app: App = self.body
        if tls is not None and tls_context is not None and not config.operator_over_http:
            self.plain = PlainHttp(self.body, https_port=tls.port,
                                   history_is_public=history_is_public)
            http_app = self.plain
        protocol = protocol_for(self.guard)
        self.servers: list[QuietServer] = [
            QuietServer(self._config(http_app, config, config.port, protocol))]
        if tls is not None and tls_context is not None:
            https_app: App = (Hsts(self.body, max_age_s=tls.hsts_max_age_s)
                              if tls.hsts_max_age_s > 0 else self.body)
            cfg = self._config(https_app, config, tls.port, protocol)
            cfg.load()
            cfg.ssl = tls_context  # uvicorn would build its own from files; this one is ours
            self.servers.append(QuietServer(cfg, handshake_timeout_s=config.header_timeout_s))

    @staticmethod
    def _config(app: App, config: ApiConfig, port: int,
                protocol: type[GuardedH11Protocol]) -> uvicorn.Config:
        return uvicorn.Config(
            app, host=config.host, port=port, log_level="warning", access_log=False,
            lifespan="off", timeout_graceful_shutdown=2, http=protocol, ws="none",
            timeout_keep_alive=int(max(1, config.keep_alive_s)), backlog=BACKLOG,
            h11_max_incomplete_event_size=config.max_header_bytes)

    async def wait_listening(self) -> None:
        for server in self.servers:
            await server.listening.wait()

    def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True

    def statistics(self) -> dict[str, int]:
        stats = self.guard.statistics()
        stats["body_refused"] = self.body.refused
        stats["body_timeouts"] = self.body.timeouts
        stats["redirected"] = self.plain.redirected if self.plain is not None else 0
        return stats

