"""A park's public Wi-Fi access point: OpenWrt with ``collectd-mod-mqtt``, as a pure model.

What it publishes is what collectd's MQTT write plugin sends (see
``shared/samples/collectd-5.12-mqtt.tsv``): topics ``collectd/<host>/<plugin>-<instance>/<type>``
and payloads ``<epoch seconds, 3 decimals>:<value>[:<value>...]`` followed by a NUL byte. Per
radio (``wlan0`` 2.4 GHz, ``wlan1`` 5 GHz) it sends the interface's byte counters
(``interface-<radio>/if_octets``: rx then tx, cumulative since the AP booted) and the associated
clients (``iwinfo-<radio>/stations``), and once per sample the ``uptime/uptime``. The counters
are sent as counters, as collectd does with ``StoreRates false`` in its MQTT plugin: the
gateway then tells an AP reboot (a counter that restarts from a small value) from a wrap.

Clients and traffic follow a park's day (local time, WITA by default): next to nothing at night,
a few morning walkers, rising through the afternoon to the evening peak around 19:00-21:00 when
families come out. :meth:`AccessPoint.busy` is that curve, 0 to 1.

An AP given a ``reboot`` restarts every day at that local hour: it is silent for ``down_s``,
then comes back with its counters and uptime counted from zero.

Two clocks, kept apart on purpose: ``t_s`` is the *simulated* time and decides every value;
``stamp_s`` is the *real* time written into the payload (collectd stamps each sample with the
AP's clock, and the gateway keeps the stamp). ``speed`` is simulated seconds per real second
(1 for a real AP): the bytes flow at the simulated hour's rate per *real* second, so the rates
the gateway works out from the real stamps are an AP's real rates, whatever the speed.

Nothing here reads a clock: the caller passes both times, in seconds since the epoch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from devices.simulators.garden import DAY_S, HOUR_S, smooth_noise

# Bytes per second (per real second) of one busy client downloading; uploads are a fraction.
TX_BYTES_PER_CLIENT = 40_000.0
RX_SHARE = 0.18
PREFIX = "collectd"

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RADIO = re.compile(r"[A-Za-z0-9_]{1,15}")
_OMEGA = 2 * math.pi / DAY_S
# A bump is cos^(2n) of the hour's angle: it expands into a sum of cosines, so it integrates in
# closed form and the counter at any time is a formula, not a sum over every second since boot:
# cos^(2n)(y) = (C(2n, n) + 2 * sum_k C(2n, n - k) cos(2ky)) / 4^n.
def _coefficients(n: int) -> tuple[float, ...]:
    return tuple((math.comb(2 * n, n) if k == 0 else 2 * math.comb(2 * n, n - k)) / 4**n
                 for k in range(n + 1))


# (weight, local hour of the peak, coefficients) of the day's bumps, over a night floor: morning
# walkers, children after school, and the families' evening (cos^16: about 17:30 to 22:00).
_NIGHT = 0.02
_BUMPS = ((0.10, 6.5, _coefficients(4)), (0.25, 16.0, _coefficients(4)),
          (0.80, 19.75, _coefficients(8)))
_CLIENT_NOISE = 300


@dataclass(frozen=True, slots=True)
class Reboot:
    """A daily restart at local ``hour``, silent for ``down_s`` simulated seconds."""

    hour: float
    down_s: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 <= self.hour < 24:
            raise ValueError(f"reboot hour {self.hour}: must be within 0..24")
        if not 0 < self.down_s < DAY_S:
            raise ValueError(f"reboot down_s {self.down_s}: must be within 0..86400")


class AccessPoint:
    """One AP named ``host`` (collectd's host name, the gateway's device id).

    ``peak_clients`` is how many are associated at the evening peak, over all radios;
    ``boot_s`` is when it was last switched on (simulated time); ``speed`` see the module
    docstring.
    """

    __slots__ = ("_offset_s", "boot_s", "host", "peak_clients", "radios", "reboot", "seed",
                 "speed")

    def __init__(
        self,
        host: str,
        *,
        peak_clients: int = 30,
        radios: Sequence[str] = ("wlan0", "wlan1"),
        boot_s: float = 0.0,
        reboot: Reboot | None = None,
        speed: float = 1.0,
        seed: int = 0,
        utc_offset_h: float = 8.0,
    ) -> None:
        if not _HOST.fullmatch(host):
            raise ValueError(f"host {host!r}: 1 to 64 letters, digits and _ . -")
        if not radios or any(not _RADIO.fullmatch(r) for r in radios):
            raise ValueError(f"radios {radios!r}: one or more interface names like wlan0")
        if not 0 < peak_clients <= 1000:
            raise ValueError(f"peak_clients {peak_clients}: must be within 1..1000")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed {speed!r}: a positive number")
        self.host = host
        self.peak_clients = peak_clients
        self.radios = tuple(radios)
        self.boot_s = boot_s
        self.reboot = reboot
        self.speed = speed
        self.seed = seed
        self._offset_s = utc_offset_h * HOUR_S

    # -- the day ------------------------------------------------------------------------------

    def local_hour(self, t_s: float) -> float:
        return ((t_s + self._offset_s) / HOUR_S) % 24

    def busy(self, t_s: float) -> float:
        """How busy the park's Wi-Fi is at ``t_s``: about 0.02 (night) to 0.9 (19:00-20:00)."""
        return _NIGHT + sum(w * _bump(t_s + self._offset_s, hour, c, 0) for w, hour, c in _BUMPS)

    def _busy_integral(self, t_s: float) -> float:
        """An antiderivative of :meth:`busy` (seconds)."""
        x = t_s + self._offset_s
        return _NIGHT * t_s + sum(w * _bump(x, hour, c, 1) for w, hour, c in _BUMPS)

    # -- up, down, booted ------------------------------------------------------------------------

    def _reboot_start(self, t_s: float) -> float | None:
        """Start of the latest scheduled reboot at or before ``t_s`` (after ``boot_s``)."""
        if self.reboot is None:
            return None
        midnight = math.floor((t_s + self._offset_s) / DAY_S) * DAY_S - self._offset_s
        start = midnight + self.reboot.hour * HOUR_S
        if start > t_s:
            start -= DAY_S
        return start if start >= self.boot_s else None

    def up(self, t_s: float) -> bool:
        """Whether the AP is running (and publishing) at ``t_s``."""
        if t_s < self.boot_s:
            return False
        start = self._reboot_start(t_s)
        return start is None or self.reboot is None or t_s >= start + self.reboot.down_s

    def booted_at(self, t_s: float) -> float:
        """When the AP running at ``t_s`` came up (``boot_s`` or the end of its last reboot)."""
        start = self._reboot_start(t_s)
        if start is None or self.reboot is None:
            return self.boot_s
        back = start + self.reboot.down_s
        if back <= t_s:
            return back
        # Down now: the previous day's reboot is the last boot, or boot_s before that.
        earlier = self._reboot_start(start - 1.0)
        return self.boot_s if earlier is None else earlier + self.reboot.down_s

    def uptime_s(self, t_s: float) -> int:
        return max(0, math.floor(t_s - self.booted_at(t_s)))

    # -- what it measures ----------------------------------------------------------------------

    def _share(self, index: int) -> float:
        """The radios' share of clients: most phones on 2.4 GHz, the rest on 5 GHz."""
        n = len(self.radios)
        if n == 1:
            return 1.0
        return 0.6 if index == 0 else 0.4 / (n - 1)

    def clients(self, t_s: float, radio: str) -> int:
        """Associated clients on ``radio`` at ``t_s`` (0 while the AP is down)."""
        if not self.up(t_s):
            return 0
        index = self.radios.index(radio)
        wobble = 1 + 0.15 * smooth_noise(self.seed, _CLIENT_NOISE + index, t_s, 900.0)
        return max(0, round(self.peak_clients * self.busy(t_s) * self._share(index) * wobble))

    def octets(self, t_s: float, radio: str) -> tuple[int, int]:
        """``radio``'s (rx, tx) byte counters at ``t_s``: bytes since the AP last came up."""
        index = self.radios.index(radio)
        boot = self.booted_at(t_s)
        if t_s <= boot:
            return 0, 0
        # Bytes per real second follow busy(); over simulated seconds that is 1/speed of it.
        busy_s = (self._busy_integral(t_s) - self._busy_integral(boot)) / self.speed
        tx = TX_BYTES_PER_CLIENT * self.peak_clients * self._share(index) * max(0.0, busy_s)
        return math.floor(tx * RX_SHARE), math.floor(tx)

    # -- what collectd publishes ----------------------------------------------------------------

    def messages(self, t_s: float, stamp_s: float) -> list[tuple[str, bytes]]:
        """One collectd sample of every value, as (topic, payload); none while the AP is down."""
        if not self.up(t_s):
            return []
        base = f"{PREFIX}/{self.host}"
        out: list[tuple[str, bytes]] = []
        for radio in self.radios:
            rx, tx = self.octets(t_s, radio)
            out.append((f"{base}/interface-{radio}/if_octets", payload(stamp_s, rx, tx)))
            out.append((f"{base}/iwinfo-{radio}/stations",
                        payload(stamp_s, self.clients(t_s, radio))))
        out.append((f"{base}/uptime/uptime", payload(stamp_s, self.uptime_s(t_s))))
        return out


def payload(stamp_s: float, *values: int | float) -> bytes:
    """collectd's ``<time>:<v1>[:<v2>...]`` with its trailing NUL (C string length + 1)."""
    text = ":".join([f"{stamp_s:.3f}", *(str(v) if isinstance(v, int) else f"{v:.15g}"
                                         for v in values)])
    return text.encode("ascii") + b"\x00"


def _bump(x_s: float, peak_hour: float, coefficients: tuple[float, ...], integral: int) -> float:
    """The bump of ``coefficients`` around ``peak_hour`` (1 there, 0 twelve hours away) at
    local time ``x_s``, or (``integral=1``) its antiderivative in seconds."""
    theta = _OMEGA * (x_s - peak_hour * HOUR_S)
    if not integral:
        return sum(a * math.cos(k * theta) for k, a in enumerate(coefficients))
    return coefficients[0] * x_s + sum(
        a * math.sin(k * theta) / (k * _OMEGA) for k, a in enumerate(coefficients) if k
    )
