"""Private Mosquitto and InfluxDB 1.x servers for tests, the benchmark and ``garden-gateway demo``.

Each server runs from the Debian binary (``/usr/sbin/mosquitto``, ``/usr/bin/influxd``) with a
config written into a folder the caller owns, listens only on 127.0.0.1 on free ports (never the
default 1883, 8086 or 8088, so the system services and a technician's own broker are left
alone), and is stopped with SIGTERM, or SIGKILL when it will not go. Servers still running when
the interpreter exits are stopped by an ``atexit`` hook, so a failed test run leaves nothing
behind. The children run in their own session: a Ctrl-C in the demo's terminal reaches only the
gateway, which then shuts down while its broker and database are still there to talk to.

Readiness is a condition, never a fixed sleep: Mosquitto is ready when its port accepts a TCP
connection, InfluxDB when ``GET /ping`` answers 204; both only while the process we started is
alive and (where /proc can tell) holds the listening socket itself, so a stranger that took the
port in the meantime does not count. When that happens to a port this module chose, the server
is started again on new ports; a port the caller gave is kept and the failure is raised.

Errors: one type, :class:`gateway.core.errors.StackError` (a ``GatewayError`` and a
``RuntimeError``; re-exported here so ``garden-gateway demo`` and the fixtures catch the same
class)::

    GatewayError, RuntimeError
     └── StackError    a binary is missing (the message gives the apt-get command), a server
                       exited or did not become ready in time (the message carries the tail of
                       its log), or InfluxDB answered a helper query with an error
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

from gateway.core.errors import StackError

__all__ = [
    "PrivateInfluxDB",
    "PrivateMosquitto",
    "Stack",
    "StackError",
    "find_executable",
    "free_port",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Default ports of Mosquitto, InfluxDB HTTP and InfluxDB RPC: a private server never takes them.
_DEFAULT_PORTS = frozenset({1883, 8086, 8088})
# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
_EXTRA_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/bin")
_PACKAGES = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "mosquitto_rr": "mosquitto-clients",
    "influxd": "influxdb",
    "influx": "influxdb-client",
}
_LOG_TAIL_CHARS = 3000
_POLL_FIRST = 0.005
_POLL_MAX = 0.1
_PORT_ATTEMPTS = 3


class _PortTaken(StackError):
    """Another process bound the port between :func:`free_port` and the server's own bind."""


def _free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is chosen, so the ports are distinct.
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in _DEFAULT_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel chose it)."""
    return _free_ports(1)[0]


def find_executable(name: str) -> str:
    """Path of ``name`` from PATH, /usr/sbin or /usr/bin; the StackError says how to install it."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_DIRS))
    if found is not None:
        return found
    package = _PACKAGES.get(name)
    fix = (
        f"install it with: apt-get install -y {package}"
        if package is not None
        else "install the package that provides it"
    )
    raise StackError(f"{name} not found on PATH or in {', '.join(_EXTRA_DIRS)}; {fix}")


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    text = text[-_LOG_TAIL_CHARS:].strip()
    return text or "(log is empty)"


def _check_config_value(what: str, value: str) -> None:
    # Both config formats are line-based: a newline would start a directive of its own.
    if "\n" in value or "\r" in value or "\0" in value:
        raise StackError(f"{what} must not contain a newline or NUL: {value!r}")


def _owns_listener(pid: int, exe: str, port: int) -> bool | None:
    """Whether ``pid`` runs ``exe`` and holds the socket listening on TCP ``port``.

    None where /proc cannot say. A stranger that grabbed the port after :func:`free_port`
    would otherwise pass the probe while our server is still on its way to failing with
    "address already in use". Until the child has exec'd it is a copy of this interpreter,
    possibly still holding our own sockets, so the executable is checked first.
    """
    try:
        table = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    except OSError:
        return None
    try:
        if os.readlink(f"/proc/{pid}/exe") != os.path.realpath(exe):
            return False
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False  # exited: a zombie has neither exe nor fds
    listening: set[str] = set()
    for line in table:
        cols = line.split()
        # cols: sl, local "0100007F:1F90", remote, state ("0A" is LISTEN), ..., inode at 9
        if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
            listening.add(f"socket:[{cols[9]}]")
    for fd in fds:
        try:
            if os.readlink(fd) in listening:
                return True
        except OSError:
            continue  # the fd closed while we looked
    return False


class _Server:
    """One child process: start, wait until ready, stop; shared by both servers."""

    name: ClassVar[str]
    host: str = HOST

    def __init__(self, workdir: Path, *, port: int | None, log_name: str) -> None:
        # Absolute, because the configs name files and the child runs with cwd=workdir.
        self.workdir = Path(workdir).absolute()
        _check_config_value("workdir", str(self.workdir))
        if port is not None and port in _DEFAULT_PORTS:
            raise StackError(f"{self.name}: port {port} is a default port; choose another")
        self.port = port if port is not None else free_port()
        # A caller's port is never replaced; ours only until the first successful start, so
        # restart() comes back where clients expect it.
        self._ports_fixed = port is not None
        self.log_path = self.workdir / log_name
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what a server defines ----------------------------------------------------------
    def _prepare(self) -> list[str]:
        """Write config files; return argv."""
        raise NotImplementedError

    def _probe(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Set-up that needs the running server."""

    def _repick_ports(self) -> None:
        self.port = free_port()

    def _on_stopped(self) -> None:
        """Release what belongs to one run."""

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id while the server runs, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            raise StackError(f"{self.name} already running pid={self.pid} port={self.port}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._ports_fixed else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
            except _PortTaken:
                if attempt == attempts:
                    raise
                logger.warning(
                    "%s port taken, retrying port=%d attempt=%d", self.name, self.port, attempt
                )
                self._repick_ports()
            else:
                break
        self._ports_fixed = True

    def _start_once(self, timeout: float) -> None:
        argv = self._prepare()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        deadline = started + timeout
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(argv[0], deadline, timeout, offset)
            self._after_ready()
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "%s started port=%d pid=%d startup_ms=%.0f workdir=%s",
            self.name,
            self.port,
            self._proc.pid,
            self.startup_seconds * 1000,
            self.workdir,
        )

    def _wait_ready(self, exe: str, deadline: float, timeout: float, offset: int) -> None:
        proc = self._proc
        assert proc is not None
        delay = _POLL_FIRST
        while True:
            # Ownership first: a stranger on the port may accept and never answer the probe.
            ready = _owns_listener(proc.pid, exe, self.port) is not False and self._probe()
            code = proc.poll()
            if code is not None:
                tail = _log_tail(self.log_path, offset)
                error = _PortTaken if "address already in use" in tail.lower() else StackError
                raise error(
                    f"{self.name} exited with code {code} during start-up (port={self.port}); "
                    f"log {self.log_path}:\n{tail}"
                )
            if ready:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(
                    f"{self.name} not ready after {timeout:.1f}s (port={self.port}); "
                    f"log {self.log_path}:\n{_log_tail(self.log_path, offset)}"
                )
            # Waiting on the process doubles as the pause: an early exit ends it at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Does nothing when not started."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s ignored SIGTERM for %.1fs, killing pid=%d", self.name, timeout, proc.pid
                )
                proc.kill()
                proc.wait()
        logger.info(
            "%s stopped port=%d pid=%d returncode=%s",
            self.name,
            self.port,
            proc.pid,
            proc.returncode,
        )
        self._forget()

    def kill(self) -> None:
        """SIGKILL and reap: a crash, as far as the server's files are concerned."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        logger.info("%s killed port=%d pid=%d", self.name, self.port, proc.pid)
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        _LIVE.discard(self)
        self._on_stopped()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} pid={self.pid} workdir={self.workdir}>"


_LIVE: set[_Server] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        logger.warning("stopping leftover %r at interpreter exit", server)
        try:
            server.stop(timeout=5.0)
        except OSError:
            logger.exception("could not stop %r", server)


class PrivateMosquitto(_Server):
    """A Mosquitto 2.x broker on 127.0.0.1 with persistence and unbounded session queues.

    Queues are unbounded (``max_queued_messages 0``) because the gateway relies on the broker
    keeping every QoS 1 message of its persistent session while it restarts; ``autosave_interval
    1`` puts them on disk within about two seconds (Mosquitto 2.0.11 saves when its loop wakes
    and a whole second has passed), so they survive a crash of the broker as well.
    """

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        extra_conf: str = "",
        password_file: Path | None = None,
        acl_file: Path | None = None,
    ) -> None:
        super().__init__(workdir, port=port, log_name="mosquitto.log")
        if (username is None) != (password is None):
            raise StackError("mosquitto: give both username and password, or neither")
        if password_file is not None and username is not None:
            raise StackError("mosquitto: give username/password or password_file, not both")
        # Files the caller writes (garden-gateway devices does, in tests): read at start and
        # again on every reload (SIGHUP).
        self.password_file = password_file
        self.acl_file = acl_file
        if username is not None:
            _check_config_value("username", username)
            if ":" in username:
                raise StackError(f"mosquitto: username must not contain ':': {username!r}")
        self.username = username
        self.password = password
        self.extra_conf = extra_conf
        self.conf_path = self.workdir / "mosquitto.conf"
        self.password_path = self.workdir / "passwd"
        self.persistence_dir = self.workdir / "persistence"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _prepare(self) -> list[str]:
        mosquitto = find_executable("mosquitto")
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by gateway.testing.stack: a private broker for tests, bench and demo.",
            f"listener {self.port} {self.host}",
            "persistence true",
            # Trailing slash: Mosquitto 1.x glued the file name on without one.
            f"persistence_location {self.persistence_dir}/",
            "persistence_file mosquitto.db",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto switches to user "mosquitto" and then can neither
            # write its log nor persist into a root-owned folder; it says so only in the log.
            lines.append("user root")
        if self.username is not None and self.password is not None:
            self._write_password_file(self.username, self.password)
            lines += [f"password_file {self.password_path}", "allow_anonymous false"]
        elif self.password_file is not None:
            _check_config_value("password_file", str(self.password_file))
            lines += [f"password_file {self.password_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file is not None:
            _check_config_value("acl_file", str(self.acl_file))
            lines.append(f"acl_file {self.acl_file}")
        if self.extra_conf:
            lines.append(self.extra_conf.strip())
        self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [mosquitto, "-c", str(self.conf_path)]

    def reload(self) -> int:
        """SIGHUP: Mosquitto re-reads its config, password and ACL files. Returns the log's
        size before, so a caller can wait for the "Reloading config." line after it."""
        pid = self.pid
        if pid is None:
            raise StackError("mosquitto is not running: nothing to reload")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        os.kill(pid, signal.SIGHUP)
        return offset

    def _write_password_file(self, username: str, password: str) -> None:
        tool = find_executable("mosquitto_passwd")
        result = subprocess.run(
            [tool, "-b", "-c", str(self.password_path), username, password],
            capture_output=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", errors="replace").strip()
            raise StackError(f"mosquitto_passwd failed with code {result.returncode}: {output}")
        self.password_path.chmod(0o600)

    def _probe(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string.
    return json.dumps(value)


def _quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PrivateInfluxDB(_Server):
    """An InfluxDB 1.x server (Debian's ``influxd`` 1.6.7) on 127.0.0.1, plus sync helpers."""

    name = "influxd"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, port=port, log_name="influxd.log")
        self.auth = auth
        # The RPC (backup/restore) service, 8088 by default: chosen once, kept across restarts.
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        self.config_path = self.workdir / "influxdb.conf"
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)

    def _repick_ports(self) -> None:
        self.port, self.rpc_port = _free_ports(2)

    def _prepare(self) -> list[str]:
        influxd = find_executable("influxd")
        for sub in ("meta", "data", "wal"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        auth_enabled = "true" if self.auth is not None else "false"
        config = f"""\
# Written by gateway.testing.stack: a private InfluxDB for tests, the benchmark and the demo.
# Debian's 1.6.7 build renamed upstream's "reporting-disabled" to "reporting-enabled" (default
# false); each build silently ignores the other's key, so both are written.
reporting-enabled = false
reporting-disabled = true
bind-address = {_toml_string(f"{self.host}:{self.rpc_port}")}

[meta]
  dir = {_toml_string(str(self.workdir / "meta"))}

[data]
  dir = {_toml_string(str(self.workdir / "data"))}
  wal-dir = {_toml_string(str(self.workdir / "wal"))}
  query-log-enabled = false
  index-version = "inmem"

[http]
  enabled = true
  bind-address = {_toml_string(f"{self.host}:{self.port}")}
  log-enabled = false
  auth-enabled = {auth_enabled}

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[logging]
  suppress-logo = true
"""
        self.config_path.write_text(config, encoding="utf-8")
        return [influxd, "-config", str(self.config_path)]

    def _http(self) -> httpx.Client:
        if self._client is None:
            # trust_env=False: an HTTP_PROXY in the environment must not capture 127.0.0.1.
            self._client = httpx.Client(
                base_url=self.url,
                auth=self.auth,
                timeout=httpx.Timeout(30.0, connect=2.0),
                trust_env=False,
            )
        return self._client

    def _on_stopped(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _probe(self) -> bool:
        try:
            response = self._http().get("/ping", timeout=1.0)
        except httpx.TransportError:
            return False
        return response.status_code == 204

    def _after_ready(self) -> None:
        if self.auth is None:
            return
        user, password = self.auth
        # InfluxDB 1.x ignores credentials until an admin exists, and CREATE USER is idempotent
        # for the same password, so this works on the first start and on every restart.
        self.query(
            f"CREATE USER {_quote_ident(user)} WITH PASSWORD {_quote_string(password)} "
            "WITH ALL PRIVILEGES"
        )

    # -- helpers ------------------------------------------------------------------------
    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL; the first statement's series (empty when none). Times are epoch ns.

        Always POST: InfluxDB 1.x accepts it for every statement, and needs it for those
        that change something.
        """
        form = {"q": q, "epoch": "ns"}
        if db is not None:
            form["db"] = db
        try:
            response = self._http().post("/query", data=form)
        except httpx.HTTPError as exc:
            raise StackError(f"influxd query failed url={self.url} q={q!r}: {exc}") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            detail = body.get("error") if isinstance(body, dict) else response.text[:500]
            raise StackError(
                f"influxd query failed status={response.status_code} q={q!r}: {detail}"
            )
        if "error" in body:
            raise StackError(f"influxd query failed q={q!r}: {body['error']}")
        results: list[dict[str, Any]] = body.get("results") or []
        for result in results:
            if "error" in result:
                raise StackError(f"influxd query failed q={q!r}: {result['error']}")
        if not results:
            return []
        series: list[dict[str, Any]] = results[0].get("series") or []
        return series

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {_quote_ident(name)}")

    def points(self, db: str, q: str) -> list[dict[str, Any]]:
        """Every row of every series as ``{column: value}``, with the series' tags merged in."""
        rows: list[dict[str, Any]] = []
        for series in self.query(q, db=db):
            columns: list[str] = series["columns"]
            tags: dict[str, Any] = series.get("tags") or {}
            for values in series.get("values") or []:
                row = dict(zip(columns, values, strict=True))
                row.update(tags)
                rows.append(row)
        return rows

    def count(self, db: str, measurement: str, field: str) -> int:
        """``SELECT count(field) FROM measurement``; 0 when there is no such series."""
        total = 0
        q = f"SELECT count({_quote_ident(field)}) FROM {_quote_ident(measurement)}"
        for row in self.points(db, q):
            total += int(row["count"])
        return total


class Stack:
    """A private Mosquitto and, unless ``influx=False``, a private InfluxDB in one folder.

    ``workdir/mosquitto`` and ``workdir/influxdb`` hold their configs, data and logs.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        influx: bool = True,
        mqtt_username: str | None = None,
        mqtt_password: str | None = None,
        influx_auth: tuple[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.mosquitto = PrivateMosquitto(
            self.workdir / "mosquitto", username=mqtt_username, password=mqtt_password
        )
        self.influx: PrivateInfluxDB | None = (
            PrivateInfluxDB(self.workdir / "influxdb", auth=influx_auth) if influx else None
        )

    def start(self) -> None:
        self.mosquitto.start()
        if self.influx is not None:
            try:
                self.influx.start()
            except BaseException:
                self.mosquitto.stop()
                raise

    def stop(self) -> None:
        try:
            if self.influx is not None:
                self.influx.stop()
        finally:
            self.mosquitto.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
