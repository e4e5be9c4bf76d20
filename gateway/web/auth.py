"""The operator token: a bearer header for scripts, an HttpOnly cookie for the operator page.

The cookie never holds the token itself: it holds an expiry and an HMAC of it under a key
derived from the token, so it cannot be forged, it ends by itself, and changing the token
signs every browser out. Comparisons are constant-time (``hmac.compare_digest``).

Without a configured token the operator side stays closed: every operator endpoint answers
401 and says how to set one.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.core.clock import SYSTEM_CLOCK, Clock

COOKIE = "gg_operator"


class OperatorAuth:
    def __init__(self, token: str | None, *, max_age_s: int,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._token = token.encode() if token else None
        self._key = (hmac.new(self._token, b"garden-gateway session v1", hashlib.sha256).digest()
                     if self._token else None)
        self.max_age_s = max_age_s
        self._clock = clock
        self.refused = 0

    @property
    def configured(self) -> bool:
        return self._token is not None

    def token_ok(self, given: str | None) -> bool:
        if self._token is None or given is None:
            return False
        ok = hmac.compare_digest(given.encode(), self._token)
        if not ok:
            self.refused += 1
        return ok

    def new_session(self) -> str:
        assert self._key is not None, "no operator token configured"
        expires = self._clock.now_ns() // 10**9 + self.max_age_s
        return f"{expires}.{self._sign(expires)}"

    def session_ok(self, value: str | None) -> bool:
        if self._key is None or not value:
            return False
        expires_text, _, signature = value.partition(".")
        if not expires_text.isdigit():
            return False
        expires = int(expires_text)
        return (hmac.compare_digest(signature, self._sign(expires))
                and expires > self._clock.now_ns() / 1e9)

    def bearer_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def _sign(self, expires: int) -> str:
        assert self._key is not None
        return hmac.new(self._key, str(expires).encode(), hashlib.sha256).hexdigest()
