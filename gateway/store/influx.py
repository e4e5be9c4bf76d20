"""The InfluxDB write transport: v1 ``/write`` and v2 ``/api/v2/write``, gzip, errors mapped.

This module only turns a list of lines into one HTTP request and the answer into either
success or one of the :mod:`gateway.core.errors` Influx errors; what to do about each (quarantine,
split, back off, pause) is the forwarder's business. Tests plug a stub server in through
``url`` only where no real server can run here (v2: Debian's InfluxDB 1.6.7 has no
``/api/v2/write``).
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import httpx

from gateway.core.backoff import parse_retry_after
from gateway.core.errors import (
    InfluxAuthError,
    InfluxError,
    InfluxRejectedError,
    InfluxRetryableError,
    InfluxTooLargeError,
)

# Above this, compress on a worker thread: zlib releases the GIL and the loop stays free.
_INLINE_GZIP_LIMIT = 64 * 1024


class InfluxDatabaseMissingError(InfluxError):
    """v1: the database does not exist (and may or may not be creatable by us)."""


def _server_message(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        body = response.json()
    except ValueError:
        return text[:2000]
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:2000]
    return text[:2000]


class InfluxWriter:
    def __init__(
        self,
        *,
        url: str,
        api: str = "v1",
        database: str = "garden",
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        org: str | None = None,
        bucket: str | None = None,
        token: str | None = None,
        use_gzip: bool = True,
        timeout_s: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.api = api
        self.database = database
        self.use_gzip = use_gzip
        headers: dict[str, str] = {"Content-Type": "text/plain; charset=utf-8"}
        auth: httpx.BasicAuth | None = None
        if api == "v2":
            self._write_path = "/api/v2/write"
            self._params: dict[str, str] = {"org": org or "", "bucket": bucket or "",
                                            "precision": "ns"}
            if token:
                headers["Authorization"] = f"Token {token}"
        else:
            self._write_path = "/write"
            self._params = {"db": database, "precision": "ns"}
            if retention_policy:
                self._params["rp"] = retention_policy
            if username:
                auth = httpx.BasicAuth(username, password or "")
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, auth=auth, timeout=timeout_s,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            # An http:// InfluxDB speaks no TLS (and redirects are not followed), so it gets no
            # CA store: loading one is about 1.4 MB of RSS for nothing (bench/memory_bench.py).
            # https:// verifies against the CA store as before.
            verify=self.url.lower().startswith("https://"),
        )
        self.username = username

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _body(self, lines: list[str]) -> bytes:
        raw = "\n".join(lines).encode("utf-8")
        if not self.use_gzip:
            return raw
        if len(raw) <= _INLINE_GZIP_LIMIT:
            return gzip.compress(raw, compresslevel=1)
        return await asyncio.to_thread(gzip.compress, raw, 1)

    async def write(self, lines: list[str]) -> None:
        body = await self._body(lines)
        headers = {"Content-Encoding": "gzip"} if self.use_gzip else {}
        try:
            response = await self._client.post(
                self._write_path, params=self._params, content=body, headers=headers
            )
        except httpx.TransportError as exc:
            raise InfluxRetryableError(
                f"cannot reach InfluxDB at {self.url}: {type(exc).__name__}: {exc}",
                url=self.url,
            ) from exc
        self._raise_for(response)

    def _raise_for(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = _server_message(response)
        where = f"InfluxDB {self.url} answered {status}: {message}"
        if status in (401, 403):
            raise InfluxAuthError(where, status=status, url=self.url)
        if status == 404 and "database not found" in message:
            raise InfluxDatabaseMissingError(where, status=status, url=self.url)
        if status == 413:
            raise InfluxTooLargeError(where, status=status, url=self.url)
        if status in (400, 422):
            raise InfluxRejectedError(message, status=status, url=self.url)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise InfluxRetryableError(where, status=status, url=self.url, retry_after=retry_after)

    async def query(self, q: str) -> dict[str, Any]:
        """A v1 ``/query`` (POST), for creating the database and for ``doctor``."""
        try:
            response = await self._client.post("/query", params={"q": q})
        except httpx.TransportError as exc:
            raise InfluxRetryableError(
                f"cannot reach InfluxDB at {self.url}: {type(exc).__name__}: {exc}",
                url=self.url,
            ) from exc
        self._raise_for(response)
        body: dict[str, Any] = response.json()
        for result in body.get("results", []):
            if "error" in result:
                message = str(result["error"])
                if "not authorized" in message or "admin privilege" in message:
                    raise InfluxAuthError(message, status=403, url=self.url)
                raise InfluxRejectedError(message, status=response.status_code, url=self.url)
        return body

    async def ensure_database(self) -> None:
        """v1: create the database if it is missing. Raises InfluxAuthError without rights."""
        if self.api != "v1":
            return
        name = self.database.replace("\\", "\\\\").replace('"', '\\"')
        await self.query(f'CREATE DATABASE "{name}"')

    async def ping(self) -> bool:
        try:
            response = await self._client.get("/ping")
        except httpx.TransportError:
            return False
        return response.status_code in (200, 204)
