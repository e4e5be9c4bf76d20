"""A polder's siren (issue 16, part 6): on at a level, off on recovery, silenced by an operator.

The siren follows the polder's warning level *from trusted readings only*: a sensor the flood
watch does not believe neither switches it on nor off (it keeps what it was doing). An operator
may silence it for a time (it comes back by itself when that ends, if the level still asks) or
test it (on for ``test_s``, then back to what the level asks). The output is written again
whenever what it should be and what was last confirmed differ; a failed write (the relay board
does not answer, the adapter is gone) is retried every ``retry_s`` and said in the status.

The output itself is a coroutine ``switch(on) -> error or None``: a Modbus coil through the
bus's poller (:meth:`gateway.sources.modbus.ModbusBus.write_coil`, wired by the application) or
a GPIO line (:class:`GpioLine`, libgpiod 2). At start the siren is switched off explicitly, so a
relay left on by a crash does not stay on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from gateway.config.polder import SirenConfig
from gateway.core.aio import clock_sleep_or_event
from gateway.core.clock import Clock
from gateway.park.polder import LEVELS, NS

log = logging.getLogger(__name__)

SirenState = Literal["off", "on", "silenced", "test"]
Switch = Callable[[bool], Awaitable[str | None]]


class Siren:
    def __init__(self, polder: str, config: SirenConfig, *, switch: Switch,
                 clock: Clock) -> None:
        self.polder = polder
        self.config = config
        self._switch = switch
        self._clock = clock
        self._on_from = LEVELS.index(config.on_level)
        self.wanted = False                   # what the trusted level asks
        self.output: bool | None = None       # last confirmed; None: not known yet
        self.silenced_until_ns: int | None = None
        self.test_until_ns: int | None = None
        self.last_error: str | None = None
        self.switches = 0
        self.failures = 0
        self._wake = asyncio.Event()

    # -- what the flood watch and the operators say (never wait) -----------------------------

    def level(self, alert_level: str, *, trusted: bool) -> None:
        """The polder's warning level; ignored unless the reading behind it is trusted."""
        if not trusted or alert_level not in LEVELS:
            return
        wanted = LEVELS.index(alert_level) >= self._on_from
        if wanted != self.wanted:
            self.wanted = wanted
            log.warning("siren polder=%s %s (alert_level=%s)", self.polder,
                        "wanted on" if wanted else "wanted off", alert_level)
            self._wake.set()

    def silence(self, for_s: float) -> None:
        self.silenced_until_ns = self._clock.now_ns() + int(for_s * NS)
        log.warning("siren polder=%s silenced by an operator for %.0f s", self.polder, for_s)
        self._wake.set()

    def resume(self) -> None:
        self.silenced_until_ns = None
        self.test_until_ns = None
        log.warning("siren polder=%s resumed by an operator", self.polder)
        self._wake.set()

    def test(self) -> None:
        self.test_until_ns = self._clock.now_ns() + int(self.config.test_s * NS)
        log.warning("siren polder=%s test: on for %g s", self.polder, self.config.test_s)
        self._wake.set()

    # -- state -----------------------------------------------------------------------------

    def _active(self, until: int | None, now: int) -> bool:
        return until is not None and now < until

    def should_sound(self, now: int | None = None) -> bool:
        now = self._clock.now_ns() if now is None else now
        if self._active(self.test_until_ns, now):
            return True
        if self._active(self.silenced_until_ns, now):
            return False
        return self.wanted

    @property
    def state(self) -> SirenState:
        now = self._clock.now_ns()
        if self._active(self.test_until_ns, now):
            return "test"
        if self._active(self.silenced_until_ns, now):
            return "silenced"
        return "on" if self.output else "off"

    def view(self) -> dict[str, Any]:
        now = self._clock.now_ns()
        until = (self.test_until_ns if self._active(self.test_until_ns, now)
                 else self.silenced_until_ns if self._active(self.silenced_until_ns, now)
                 else None)
        return {"state": self.state, "wanted": self.wanted, "output": self.output,
                "until_ns": until, "last_error": self.last_error, "kind": self.config.kind,
                "on_level": self.config.on_level, "switches": self.switches,
                "failures": self.failures}

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the output at what it should be, until cancelled."""
        retry_at: int | None = None
        while True:
            self._wake.clear()
            now = self._clock.now_ns()
            target = self.should_sound(now)
            if target != self.output and (retry_at is None or now >= retry_at):
                error = await self._switch(target)
                if error is None:
                    self.output, self.last_error, retry_at = target, None, None
                    self.switches += 1
                    log.warning("siren polder=%s switched %s", self.polder,
                                "on" if target else "off")
                else:
                    self.failures += 1
                    self.last_error = error
                    retry_at = self._clock.now_ns() + int(self.config.retry_s * NS)
                continue
            deadlines = [t for t in (self.test_until_ns, self.silenced_until_ns, retry_at)
                         if t is not None and t > now]
            if not deadlines:
                await self._wake.wait()
            else:
                await clock_sleep_or_event(self._clock, (min(deadlines) - now) / NS,
                                           self._wake)


class GpioLine:
    """A GPIO output line through libgpiod 2 (the ``gpiod`` package, installed with the
    ``gpio`` extra). Requested at the first switch, kept until :meth:`close`."""

    def __init__(self, chip: str, line: int, *, active_low: bool = False,
                 gpiod_module: Any = None) -> None:
        self.chip = chip
        self.line = line
        self.active_low = active_low
        self._gpiod = gpiod_module
        self._request: Any = None

    def _lines(self) -> Any:
        gpiod = self._gpiod
        if gpiod is None:
            import gpiod  # type: ignore[import-not-found,no-redef,unused-ignore]
            self._gpiod = gpiod
        if self._request is None:
            from_line = gpiod.line
            settings = gpiod.LineSettings(direction=from_line.Direction.OUTPUT,
                                          output_value=from_line.Value.INACTIVE,
                                          active_low=self.active_low)
            self._request = gpiod.request_lines(self.chip, consumer="garden-gateway-siren",
                                                config={self.line: settings})
        return self._request

    def _set(self, on: bool) -> None:
        request = self._lines()
        value = self._gpiod.line.Value
        request.set_value(self.line, value.ACTIVE if on else value.INACTIVE)

    async def switch(self, on: bool) -> str | None:
        try:
            await asyncio.to_thread(self._set, on)
        except (ImportError, OSError, ValueError) as exc:
            self.close()
            return f"GPIO {self.chip} line {self.line}: {type(exc).__name__}: {exc}"
        return None

    def close(self) -> None:
        if self._request is not None:
            try:
                self._request.release()
            finally:
                self._request = None
