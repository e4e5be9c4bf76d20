"""The operator token: a bearer header for scripts, an HttpOnly cookie for the operator page.

Sessions. The cookie never holds the token itself: it holds a random session id and an HMAC of
it under a key derived from the token. The gateway remembers its active sessions (at most
``MAX_SESSIONS``; signing in once more drops the oldest), each with its expiry, so signing out
revokes a session for good: the same cookie replayed afterwards is refused. Changing the token
changes the key, which signs every browser out. Expired sessions are pruned whenever the store
is touched. ``load``/``save`` (optional) keep the store across a restart; the web layer knows
nothing of where it goes.

Throttling. Per client address, more than ``attempts`` wrong tokens within ``window_s`` seconds
throttle that address until the window that started with its first wrong token ends: every
token it presents meanwhile, right or wrong, is answered 429 with ``Retry-After`` (a right token
let through would make the throttle an oracle for guessing). Other addresses are not affected.
The memory is an LRU of at most ``MAX_TRACKED`` addresses, so a flood of addresses cannot grow it.

A cookie of any size or shape that is not one of ours is simply "not signed in" (401): nothing
here parses numbers out of it. Comparisons are constant-time (``hmac.compare_digest``).

Without a configured token the operator side stays closed: every operator endpoint answers
401 and says how to set one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.core.clock import SYSTEM_CLOCK, Clock

COOKIE = "gg_operator"
MAX_SESSIONS = 100
MAX_TRACKED = 4096
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")

SessionLoad = Callable[[], Any]
SessionSave = Callable[[dict[str, Any]], None]


class Throttled(Exception):
    """This address gave too many wrong tokens; try again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many wrong tokens from this address; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class OperatorAuth:
    def __init__(self, token: str | None, *, max_age_s: int, attempts: int = 5,
                 window_s: float = 300.0, clock: Clock = SYSTEM_CLOCK,
                 load: SessionLoad | None = None, save: SessionSave | None = None) -> None:
        self._token = token.encode() if token else None
        self._key = (hmac.new(self._token, b"garden-gateway session v2", hashlib.sha256).digest()
                     if self._token else None)
        self.max_age_s = max_age_s
        self.attempts = attempts
        self.window_s = window_s
        self._clock = clock
        self._save = save
        self._lock = threading.Lock()
        # session id -> expiry (epoch seconds), oldest first
        self._sessions: OrderedDict[str, int] = OrderedDict()
        # address -> (monotonic start of its window, wrong tokens in it), least recent first
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.refused = 0
        self.throttled = 0
        self.revoked = 0
        self.save_failures = 0
        if load is not None and self._key is not None:
            self._restore(load())

    @property
    def configured(self) -> bool:
        return self._token is not None

    # -- tokens ----------------------------------------------------------------------------

    def check_token(self, given: str | None, host: str | None) -> bool:
        """Whether ``given`` is the token; raises :class:`Throttled` for a throttled address.

        A wrong token counts against ``host``; a missing one (None) does not."""
        if self._token is None or given is None:
            return False
        address = host or "?"
        self._raise_if_throttled(address)
        ok = hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)
        if not ok:
            self._failed(address)
        return ok

    def token_ok(self, given: str | None) -> bool:
        """The token check without an address (no throttling); kept for callers off the web."""
        if self._token is None or given is None:
            return False
        ok = hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)
        if not ok:
            self.refused += 1
        return ok

    def bearer_ok(self, authorization: str | None, host: str | None = None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.check_token(value.strip(), host)

    def _raise_if_throttled(self, address: str) -> None:
        with self._lock:
            entry = self._failures.get(address)
            if entry is None:
                return
            start, count = entry
            left = start + self.window_s - self._clock.monotonic()
            if left <= 0:
                del self._failures[address]
                return
            if count >= self.attempts:
                self.throttled += 1
                raise Throttled(max(1, math.ceil(left)))

    def _failed(self, address: str) -> None:
        with self._lock:
            self.refused += 1
            now = self._clock.monotonic()
            start, count = self._failures.pop(address, (now, 0))
            if start + self.window_s <= now:
                start, count = now, 0
            self._failures[address] = (start, count + 1)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def tracked_addresses(self) -> int:
        return len(self._failures)

    # -- sessions --------------------------------------------------------------------------

    def new_session(self) -> str:
        assert self._key is not None, "no operator token configured"
        session_id = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
        with self._lock:
            self._prune()
            self._sessions[session_id] = self._now_s() + self.max_age_s
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            self._persist()
        return f"{session_id}.{self._sign(session_id)}"

    def session_ok(self, value: str | None) -> bool:
        session_id = self._session_id(value)
        if session_id is None:
            return False
        with self._lock:
            expires = self._sessions.get(session_id)
            if expires is None:
                return False
            if expires <= self._now_s():
                del self._sessions[session_id]
                self._persist()
                return False
            return True

    def revoke(self, value: str | None) -> bool:
        """Forget the session in ``value``; whether there was one."""
        session_id = self._session_id(value)
        if session_id is None:
            return False
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                return False
            self.revoked += 1
            self._persist()
            return True

    def active_sessions(self) -> int:
        with self._lock:
            self._prune()
            return len(self._sessions)

    def statistics(self) -> dict[str, int]:
        return {"token_refusals": self.refused, "token_throttled": self.throttled,
                "sessions_revoked": self.revoked, "sessions_active": self.active_sessions(),
                "throttle_addresses": self.tracked_addresses(),
                "session_save_failures": self.save_failures}

    def _session_id(self, value: str | None) -> str | None:
        """The session id of a well-formed, correctly signed cookie; None for anything else."""
        if self._key is None or not value or len(value) != 32 + 1 + 64:
            return None
        session_id, dot, signature = value.partition(".")
        if (not dot or _SESSION_ID.fullmatch(session_id) is None
                or _SIGNATURE.fullmatch(signature) is None):
            return None
        if not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        return session_id

    def _sign(self, session_id: str) -> str:
        assert self._key is not None
        return hmac.new(self._key, session_id.encode("ascii"), hashlib.sha256).hexdigest()

    def _now_s(self) -> int:
        return self._clock.now_ns() // 10**9

    def _prune(self) -> None:
        now = self._now_s()
        expired = [sid for sid, expires in self._sessions.items() if expires <= now]
        for sid in expired:
            del self._sessions[sid]
        if expired:
            self._persist()

    def _persist(self) -> None:
        if self._save is None:
            return
        # Stored under the key's fingerprint, so a changed token finds nothing to restore.
        try:
            self._save({"key": self._fingerprint(), **{f"s:{k}": v
                                                        for k, v in self._sessions.items()}})
        except Exception:  # noqa: BLE001 - a store that fails must not break sign-in/out
            self.save_failures += 1

    def _fingerprint(self) -> str:
        assert self._key is not None
        return hashlib.sha256(self._key).hexdigest()[:16]

    def _restore(self, stored: Any) -> None:
        if not isinstance(stored, dict) or stored.get("key") != self._fingerprint():
            return
        now = self._now_s()
        kept = sorted((v, k[2:]) for k, v in stored.items()
                      if isinstance(k, str) and k.startswith("s:")
                      and _SESSION_ID.fullmatch(k[2:]) is not None
                      and isinstance(v, int) and not isinstance(v, bool)
                      and now < v <= now + self.max_age_s)
        for expires, session_id in kept[-MAX_SESSIONS:]:
            self._sessions[session_id] = expires


def file_store(path: Path) -> tuple[SessionLoad, SessionSave]:
    """``load``/``save`` keeping the sessions in ``path`` (0600, replaced atomically)."""

    def load() -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save(sessions: dict[str, Any]) -> None:
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(sessions, out)
        os.replace(temporary, path)

    return load, save
