"""A tiny client for systemd's notify protocol (sd_notify(3)), without python-systemd.

systemd starts the service with ``NOTIFY_SOCKET`` naming an AF_UNIX datagram socket (a path,
or ``@name`` for the abstract namespace); the service sends newline-separated ``KEY=VALUE``
assignments to it: ``READY=1`` when it serves, ``STATUS=...`` for ``systemctl status``,
``WATCHDOG=1`` to say it is alive, ``STOPPING=1`` when it shuts down.
``WATCHDOG_USEC`` is the watchdog timeout (``WatchdogSec=``); ``WATCHDOG_PID``, when set,
names the process it applies to.

Without ``NOTIFY_SOCKET`` (a terminal, the tests, the demo) every call is a no-op. A failed
send never raises into the gateway: it is logged once and counted (``statistics()``); the
next send tries again. Sends never block the event loop (the socket is non-blocking: a full
queue at systemd's end loses that one message, and the next ping makes up for it).

:meth:`Notifier.from_environment` with ``unset=True`` removes the three variables from this
process's environment after reading them, as ``sd_notify(unset_environment=1)`` does, so no
child process the gateway might start believes it is the one systemd watches.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True, slots=True)
class NotifierStats:
    address: str | None
    sent: int
    failed: int
    last_error: str | None


def watchdog_interval_s(env: Mapping[str, str] | None = None, *, pid: int | None = None
                        ) -> float | None:
    """The watchdog timeout systemd asks for, in seconds; None when there is none for us.

    As sd_watchdog_enabled(3): ``WATCHDOG_USEC`` must be a positive integer, and when
    ``WATCHDOG_PID`` is set it must equal our pid (``pid``, default ``os.getpid()``); an unset
    ``WATCHDOG_PID`` means the watchdog applies to whoever reads it.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("sdnotify: WATCHDOG_USEC=%r is not an integer; no watchdog", raw)
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            log.warning("sdnotify: WATCHDOG_PID=%r is not a pid; no watchdog", owner)
            return None
    return usec / 1e6


def _address(value: str) -> str | bytes | None:
    if value.startswith("@") and len(value) > 1:
        # Abstract namespace: a leading NUL instead of the '@', no terminating NUL.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends notify messages to ``address`` (a ``NOTIFY_SOCKET`` value); None: a no-op."""

    def __init__(self, address: str | None, *, watchdog_s: float | None = None) -> None:
        self.address = address or None
        self.watchdog_s = watchdog_s if self.address else None
        self._target = _address(self.address) if self.address else None
        self._sock: socket.socket | None = None
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None
        self._complained = False
        if self.address and self._target is None:
            self._fail(f"NOTIFY_SOCKET={self.address!r} is neither an absolute path nor "
                       "@abstract; notifications are off")

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None, *,
                         unset: bool = False) -> Notifier:
        env = os.environ if env is None else env
        notifier = cls(env.get("NOTIFY_SOCKET"), watchdog_s=watchdog_interval_s(env))
        if unset:
            for name in ENV_VARS:
                env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def notify(self, **assignments: str | int) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True when the socket took it."""
        if self._target is None:
            return False
        text = "\n".join(f"{key}={_one_line(str(value))}" for key, value in assignments.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text.encode(), self._target)
        except OSError as exc:
            self._fail(f"send to NOTIFY_SOCKET={self.address} failed: {exc}")
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str, *, extend_timeout_s: float | None = None) -> bool:
        """``STOPPING=1``; ``extend_timeout_s`` asks systemd to wait at least that long for
        the stop (``EXTEND_TIMEOUT_USEC``: never shortens ``TimeoutStopSec``)."""
        if extend_timeout_s is None:
            return self.notify(STOPPING=1, STATUS=status)
        return self.notify(STOPPING=1, STATUS=status,
                           EXTEND_TIMEOUT_USEC=int(extend_timeout_s * 1e6))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def statistics(self) -> NotifierStats:
        return NotifierStats(self.address, self.sent, self.failed, self.last_error)

    def _fail(self, error: str) -> None:
        self.failed += 1
        self.last_error = error
        if not self._complained:
            self._complained = True
            log.warning("sdnotify: %s (further failures are only counted)", error)


def _one_line(value: str) -> str:
    # A newline would start another assignment: STATUS text must not smuggle one in.
    return value.replace("\r", " ").replace("\n", " ")
