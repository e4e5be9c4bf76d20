"""A siren that an operator controls (issue 16, part 6).

The controller on an injected clock with a recording output; the Modbus coil (function 05)
against pymodbus's server on a pseudo-terminal pair, its state read back from the slave; the
whole path in the real gateway process: a polder at Awas sounds the relay board's siren, an
operator silences and tests it over the API. The GPIO line has no chip here (no /dev/gpiochip,
no gpio-sim in this container): its driver is exercised against ``StubGpiod``, a stand-in for
libgpiod 2's module, named so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest

from devices.modbus_rtu import CoilWrite, write_coil_request
from gateway.config.polder import SirenConfig
from gateway.park.siren import GpioLine, Siren
from gateway.pipeline import Committer, Pipeline
from gateway.store.spool import Spool
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, Publisher, base_config, until, wait_for
from tests.conftest import running as running_all
from tests.modbus_peer import modbus_peer
from tests.test_modbus import block_of, make_bus, rig

__all__ = ["rig"]  # the fixture, imported

T0 = 1_800_000_000 * 10**9
S = 10**9


class Output:
    def __init__(self) -> None:
        self.writes: list[bool] = []
        self.fail: str | None = None

    async def __call__(self, on: bool) -> str | None:
        self.writes.append(on)
        return self.fail


@contextlib.asynccontextmanager
async def running(siren: Siren) -> AsyncIterator[Siren]:
    task = asyncio.create_task(siren.run())
    try:
        yield siren
    finally:
        task.cancel()
        await asyncio.wait([task])


def siren(clock: FakeClock, out: Output, **kw: Any) -> Siren:
    cfg = SirenConfig.model_validate({"kind": "modbus_coil", "bus": "b", "unit": 2, **kw})
    return Siren("polder-1", cfg, switch=out, clock=clock)


async def test_on_at_awas_off_on_recovery_and_never_by_an_untrusted_level() -> None:
    clock, out = FakeClock(T0), Output()
    s = siren(clock, out)
    async with running(s):
        await until(lambda: out.writes == [False])        # off at start, explicitly
        s.level("siaga", trusted=True)
        s.level("awas", trusted=True)
        await until(lambda: out.writes == [False, True])
        assert s.state == "on"
        s.level("normal", trusted=False)                  # a broken sensor says "normal"
        s.level("siaga", trusted=True)                    # Awas left: off
        await until(lambda: out.writes == [False, True, False])
        s.level("awas", trusted=False)                    # a broken sensor says "awas"
        await asyncio.sleep(0)
        assert (s.state, out.writes[-1]) == ("off", False)


async def test_silenced_for_a_time_then_back_and_a_test_is_five_seconds() -> None:
    clock, out = FakeClock(T0), Output()
    s = siren(clock, out)
    async with running(s):
        s.level("awas", trusted=True)
        await until(lambda: out.writes == [True])
        s.silence(3600)
        await until(lambda: out.writes == [True, False])
        assert s.state == "silenced"
        assert s.view()["until_ns"] == T0 + 3600 * S
        await until(lambda: clock.sleepers > 0)
        clock.advance(3600)                               # the silence ends: Awas still
        await until(lambda: out.writes == [True, False, True])
        s.level("normal", trusted=True)
        await until(lambda: out.writes[-1] is False)
        s.test()
        await until(lambda: out.writes[-1] is True)
        assert str(s.state) == "test"
        await until(lambda: clock.sleepers > 0)
        clock.advance(5)
        await until(lambda: out.writes[-1] is False)
        assert str(s.state) == "off"


async def test_a_failed_switch_is_said_and_tried_again() -> None:
    clock, out = FakeClock(T0), Output()
    out.fail = "timeout after 1 s"
    s = siren(clock, out, retry_s=5)
    async with running(s):
        await until(lambda: len(out.writes) == 1)
        assert (s.view()["last_error"], s.output) == ("timeout after 1 s", None)
        out.fail = None
        await until(lambda: clock.sleepers > 0)
        clock.advance(5)
        await until(lambda: s.output is False)
        assert (len(out.writes), s.view()["last_error"], s.failures) == (2, None, 1)


def test_the_coil_write_frame_and_its_echo() -> None:
    assert write_coil_request(1, 0x00AC, True).hex(" ") == "01 05 00 ac ff 00 4c 1b"
    ok = CoilWrite(1, 0xAC, True)
    assert ok.feed(ok.request[:3]) is False
    assert ok.feed(ok.request[3:]) is True
    assert ok.written
    assert ok.error is None
    refused = CoilWrite(1, 0xAC, True)
    refused.feed(bytes.fromhex("01 85 02 c3 51"))
    assert refused.error is not None
    assert refused.error.kind == "exception"


async def test_the_coil_is_switched_on_the_real_slave_between_polls(
        tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]) -> None:
    with modbus_peer(tmp_path / "ttyRS485", units=(1, 2)) as peer:
        bus = make_bus(peer, rig, units=(1,))              # unit 1 polled all along
        async with running_all(bus.run(), rig[1].run()):
            await until(lambda: block_of(bus, "unit-1", "holding@0")["ok"] >= 3)
            assert await bus.write_coil(2, 3, True) is None
            assert peer.coil(2, 3) is True
            assert await bus.write_coil(2, 3, False) is None
            assert peer.coil(2, 3) is False
            assert peer.coil_writes == [(2, 3, [True]), (2, 3, [False])]
            ok = block_of(bus, "unit-1", "holding@0")["ok"]
            await until(lambda: block_of(bus, "unit-1", "holding@0")["ok"] >= ok + 3)
            peer.silenced.add(2)                           # the relay board stops answering
            error = await bus.write_coil(2, 3, True)
            assert error is not None
            assert error.startswith("timeout")
            assert (bus.coil_writes, bus.coil_write_failures) == (2, 1)
            assert block_of(bus, "unit-1", "holding@0")["errors"] == {}


def test_awas_sounds_the_relay_board_and_the_operator_silences_and_tests_it(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher],
) -> None:
    link = tmp_path / "ttyRS485"
    with modbus_peer(link, units=(7,)) as peer:
        cfg = base_config(
            tmp_path, mosquitto, influx_server, db_name,
            modbus=[{"name": "relays", "port": str(link), "timeout_s": 0.5,
                     "reopen_min_s": 0.1, "reopen_max_s": 0.3, "slaves": []}],
            polder=[{"device": "polder-1", "field": "level_cm", "max_rate_per_h": 1e15,
                     "min_hold_s": 0,
                     "thresholds": {"waspada": 150, "siaga": 200, "awas": 250},
                     "siren": {"kind": "modbus_coil", "bus": "relays", "unit": 7, "coil": 1,
                               "test_s": 2}}])
        gw = gateway_factory(cfg)
        pub = publisher_factory(mosquitto.port)
        topic = "garden/taman-uji/polder-1/telemetry"

        def polder() -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(f"{gw.api}/api/v1/polder", headers=OPERATOR,
                                             timeout=5).json()["polders"][0]
            return body

        def command(action: str, **kw: Any) -> httpx.Response:
            return httpx.post(f"{gw.api}/api/v1/polder/polder-1/siren", headers=OPERATOR,
                              json={"action": action, **kw}, timeout=5)

        wait_for(lambda: (polder()["siren_detail"] or {}).get("output") is False, timeout=20,
                 what="the siren off at start")
        pub.publish(topic, {"level_cm": 262})
        wait_for(lambda: peer.coil(7, 1), timeout=20, what="the coil on at Awas")
        assert polder()["siren"] == "on"
        metrics = httpx.get(f"{gw.api}/metrics", headers=OPERATOR, timeout=5).text
        assert 'garden_gateway_polder_siren_on{polder="polder-1"} 1' in metrics
        assert 'garden_gateway_polder_alert_level{polder="polder-1",level="awas"} 1' in metrics
        assert httpx.post(f"{gw.api}/api/v1/polder/polder-1/siren",
                          json={"action": "silence"}, timeout=5).status_code == 401
        answer = command("silence", for_s=600)
        assert answer.status_code == 200
        assert answer.json()["siren"] == "silenced"
        wait_for(lambda: not peer.coil(7, 1), timeout=20, what="the coil off, silenced")
        assert command("resume").json()["siren_detail"]["wanted"] is True
        wait_for(lambda: peer.coil(7, 1), timeout=20, what="the coil on again")
        pub.publish(topic, {"level_cm": 120})             # back to normal (no hold: 0 s)
        wait_for(lambda: not peer.coil(7, 1), timeout=40, what="the coil off on recovery")
        writes = len(peer.coil_writes)
        assert command("test").json()["siren"] == "test"
        wait_for(lambda: len(peer.coil_writes) >= writes + 2, timeout=20,
                 what="the test: on, then off")
        assert [w[2] for w in peer.coil_writes[writes:writes + 2]] == [[True], [False]]
        assert command("silence", for_s=5).status_code == 422   # under a minute
        assert httpx.post(f"{gw.api}/api/v1/polder/polder-9/siren", headers=OPERATOR,
                          json={"action": "test"}, timeout=5).status_code == 404


# -- GPIO, against a stand-in for libgpiod 2 ---------------------------------------------------


class _Direction(Enum):
    OUTPUT = "output"


class _Value(Enum):
    ACTIVE = 1
    INACTIVE = 0


class StubGpiod:
    """The part of libgpiod 2's Python module the siren uses, recording what it is asked."""

    class line:
        Direction = _Direction
        Value = _Value

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[int, Any]]] = []
        self.values: list[tuple[int, _Value]] = []
        self.released = 0
        self.missing_chip = False

    def LineSettings(self, **kw: Any) -> dict[str, Any]:
        return kw

    def request_lines(self, chip: str, *, consumer: str, config: dict[int, Any]) -> Any:
        if self.missing_chip:
            raise FileNotFoundError(2, "No such file or directory", chip)
        self.requests.append((chip, config))
        stub = self

        class Request:
            def set_value(self, line: int, value: _Value) -> None:
                stub.values.append((line, value))

            def release(self) -> None:
                stub.released += 1

        return Request()


async def test_a_gpio_siren_requests_its_line_once_as_an_output_and_sets_it() -> None:
    gpiod = StubGpiod()
    line = GpioLine("/dev/gpiochip0", 17, active_low=True, gpiod_module=gpiod)
    assert await line.switch(True) is None
    assert await line.switch(False) is None
    ((chip, config),) = gpiod.requests
    assert chip == "/dev/gpiochip0"
    assert config[17] == {"direction": _Direction.OUTPUT, "output_value": _Value.INACTIVE,
                          "active_low": True}
    assert gpiod.values == [(17, _Value.ACTIVE), (17, _Value.INACTIVE)]
    line.close()
    assert gpiod.released == 1


async def test_a_missing_gpio_chip_is_an_error_said_not_a_crash() -> None:
    gpiod = StubGpiod()
    gpiod.missing_chip = True
    line = GpioLine("/dev/gpiochip9", 4, gpiod_module=gpiod)
    error = await line.switch(True)
    assert error is not None
    assert "gpiochip9" in error
    assert "FileNotFoundError" in error


@pytest.mark.parametrize("raw", [{"kind": "modbus_coil", "bus": "b"}, {"kind": "gpio"}])
def test_a_siren_without_its_address_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="needs"):
        SirenConfig.model_validate(raw)
