"""The MQTT adapter at its seam, in-process, against a private Mosquitto.

These pin down the two halves of the delivery guarantee that the end-to-end tests can only
observe from outside: no PUBACK before the commit, and a redelivery of a committed but
unacknowledged message writes the very same point.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import Config, MqttConfig, TlsConfig
from gateway.pipeline import Committer, Pipeline
from gateway.sources.mqtt import MqttSource
from gateway.store.spool import SeenLookup, Spool
from gateway.testing.stack import PrivateMosquitto, free_port
from tests.conftest import Publisher, running, until

TOPIC = "garden/taman-uji/polder-1/telemetry"


@dataclass
class Rig:
    spool: Spool
    pipeline: Pipeline
    committer: Committer
    seen: SeenLookup
    make_source: Callable[..., MqttSource]


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: PrivateMosquitto) -> AsyncIterator[Rig]:
    config = Config.model_validate({
        "data_dir": str(tmp_path),
        "gateway": {"id": "gw-test", "site": "taman-uji"},
        "subscriptions": [{"topic": "garden/+/+/telemetry", "format": "native"}],
    })
    spool = Spool.open(tmp_path / "spool.db", max_bytes=10**7)
    pipeline = Pipeline.from_config(config)
    committer = Committer(spool=spool, interval_s=0.01, max_readings=1000)
    seen = SeenLookup(tmp_path / "spool.db")

    def make_source(**kw: Any) -> MqttSource:
        mqtt = MqttConfig(host="127.0.0.1", port=mosquitto.port, reconnect_min_s=0.05,
                          reconnect_max_s=0.2, **kw)
        return MqttSource(config=mqtt, client_id="gw-test", topics=["garden/+/+/telemetry"],
                          pipeline=pipeline, committer=committer, seen=seen)

    yield Rig(spool, pipeline, committer, seen, make_source)
    seen.close()
    await spool.close()


async def publish(port: int, payloads: list[dict[str, Any]]) -> None:
    def send() -> None:
        pub = Publisher(port)
        for p in payloads:
            pub.publish(TOPIC, p)
        pub.close()
    await asyncio.to_thread(send)


def fetch_session(port: int, expect: int) -> list[paho.MQTTMessage]:
    """Reconnect as the gateway's client id with a plain client: what does the broker hold?"""
    got: list[paho.MQTTMessage] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-test",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.on_message = lambda c, u, m: got.append(m)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    deadline = time.monotonic() + 10
    while len(got) < expect and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return got


async def test_no_puback_before_the_commit(rig: Rig, mosquitto: PrivateMosquitto,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    gate = asyncio.Event()
    real_append = rig.spool.append

    async def slow_append(*a: Any, **kw: Any) -> int:
        await gate.wait()
        return await real_append(*a, **kw)

    monkeypatch.setattr(rig.spool, "append", slow_append)
    source = rig.make_source()
    async with running(source.run(), rig.committer.run()):
        await until(lambda: source.statistics().connected)
        await publish(mosquitto.port, [{"level_cm": 1.5}])
        await until(lambda: source.statistics().messages == 1)
        await asyncio.sleep(0.2)
        assert source.statistics().acks == 0
    # The gateway "crashed" with the commit still pending: the broker must still have it.
    held = await asyncio.to_thread(fetch_session, mosquitto.port, 1)
    assert [m.payload for m in held] == [b'{"level_cm": 1.5}']
    assert held[0].dup


async def test_redelivery_of_committed_message_reuses_first_receive_time(
    rig: Rig, mosquitto: PrivateMosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = rig.make_source()
    # Commit, then "crash" before the PUBACK leaves.
    monkeypatch.setattr(first, "_ack", lambda *a: None)
    async with running(first.run(), rig.committer.run()):
        await until(lambda: first.statistics().connected)
        await publish(mosquitto.port, [{"level_cm": 2.5}, {"level_cm": 3.5, "ts": 1795850797}])
        await until(lambda: rig.spool.statistics().rows == 2)
    assert first.statistics().acks == 0
    second = rig.make_source()
    async with running(second.run(), rig.committer.run()):
        await until(lambda: rig.spool.statistics().rows == 4)
        await until(lambda: second.statistics().acks == 2)
    stats = second.statistics()
    assert stats.redeliveries == 2
    # Only the message without a device time needed its first receive time back.
    assert stats.redeliveries_matched == 1
    lines = [line for _, line in await rig.spool.fetch(10)]
    assert lines[0] == lines[2]
    assert lines[1] == lines[3]
    assert lines[1].endswith(" 1795850797000000000")
    # And now the broker holds nothing for us.
    assert await asyncio.to_thread(fetch_session, mosquitto.port, 0) == []


async def test_wrong_credentials_are_reported_and_retried(tmp_path: Path, rig: Rig) -> None:
    with PrivateMosquitto(tmp_path / "authbroker", username="gw", password="right") as broker:
        mqtt = MqttConfig(host="127.0.0.1", port=broker.port, username="gw",
                          password="wrong", reconnect_min_s=0.05, reconnect_max_s=0.1,
                          protocol="3.1.1")
        source = MqttSource(config=mqtt, client_id="gw-test", topics=["a/#"],
                            pipeline=rig.pipeline, committer=rig.committer, seen=None)
        async with running(source.run()):
            await until(lambda: source.statistics().state == "refused")
            await until(lambda: source.statistics().last_error is not None)
        st = source.statistics()
        assert not st.connected
        assert "refused" in (st.last_error or "").lower() or "not authori" in (
            st.last_error or "").lower()


def _make_certs(folder: Path, name: str) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / f"{name}-ca.key", folder / f"{name}-ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed for the TLS tests (apt-get install openssl)"
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
         "-days", "2", "-subj", f"/CN={name} test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ):
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=60)
    return {"ca": ca_crt, "cert": crt, "key": key}


async def test_tls_with_the_right_ca_connects_and_a_wrong_ca_is_refused(
    tmp_path: Path, rig: Rig
) -> None:
    certs = _make_certs(tmp_path / "pki", "park")
    other = _make_certs(tmp_path / "other", "other")
    tls_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {certs['ca']}\n"
             f"certfile {certs['cert']}\nkeyfile {certs['key']}\n")
    def source(ca: Path) -> MqttSource:
        mqtt = MqttConfig(host="127.0.0.1", port=tls_port, tls=TlsConfig(ca_file=ca),
                          reconnect_min_s=0.05, reconnect_max_s=0.1)
        return MqttSource(config=mqtt, client_id="gw-tls", topics=["a/#"],
                          pipeline=rig.pipeline, committer=rig.committer, seen=None)

    with PrivateMosquitto(tmp_path / "tlsbroker", extra_conf=extra):
        good = source(certs["ca"])
        async with running(good.run()):
            await until(lambda: good.statistics().connected)
        bad = source(other["ca"])
        async with running(bad.run()):
            await until(lambda: bad.statistics().last_error is not None)
        assert not bad.statistics().connected
        assert "CERTIFICATE_VERIFY_FAILED" in (bad.statistics().last_error or "")


def test_a_subscription_the_broker_refuses_is_reported(rig: Rig) -> None:
    # Mosquitto 2.0.11 grants even subscriptions its ACL denies, so no local broker refuses
    # one; this drives the SUBACK handler directly with what EMQX or a newer Mosquitto send.
    from paho.mqtt.reasoncodes import ReasonCode

    source = rig.make_source()
    source._topics = ["garden/+/+/telemetry", "secret/#"]
    granted = ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")
    denied = ReasonCode(PacketTypes.SUBACK, "Not authorized")
    source._on_subscribe(None, None, 1, [granted, denied], None)  # type: ignore[arg-type]
    assert source.refused_subscriptions == [("secret/#", "Not authorized")]
    assert "broker refused subscriptions: secret/# (Not authorized)" in (
        source.statistics().last_error or "")


async def test_reading_stops_while_too_many_messages_wait_for_their_commit(
    rig: Rig, mosquitto: PrivateMosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    real_append = rig.spool.append

    async def slow_append(*a: Any, **kw: Any) -> int:
        await gate.wait()
        return await real_append(*a, **kw)

    monkeypatch.setattr(rig.spool, "append", slow_append)
    # MQTT 3.1.1: the broker's window (20 by default) is wider than ours (10), so only the
    # gateway's own flow control can hold the line.
    source = rig.make_source(protocol="3.1.1", receive_maximum=10)
    async with running(source.run(), rig.committer.run()):
        await until(lambda: source.statistics().connected)
        await publish(mosquitto.port, [{"level_cm": float(i)} for i in range(50)])
        await until(lambda: source.statistics().flow_pauses >= 1)
        await asyncio.sleep(0.2)
        assert source.statistics().messages <= 11
        gate.set()
        await until(lambda: source.statistics().acks == 50)
        await until(lambda: rig.spool.statistics().rows == 50)
    assert source.statistics().unacknowledged == 0


async def test_keepalive_holds_through_a_stream_the_gateway_reads_itself(
    rig: Rig, mosquitto: PrivateMosquitto
) -> None:
    # The PUBLISH packets are read by the gateway, not paho, so paho never sees them arrive:
    # it must still ping, and its PINGRESP (handed to paho) must keep the connection, over
    # more than 1.5 x the keepalive, after which Mosquitto or paho would have dropped it.
    source = rig.make_source(keepalive_s=5)
    async with running(source.run(), rig.committer.run()):
        await until(lambda: source.statistics().connected)
        began = time.monotonic()
        pub = await asyncio.to_thread(Publisher, mosquitto.port)
        sent = 0
        try:
            while time.monotonic() - began < 12:
                await asyncio.to_thread(pub.publish, TOPIC, {"level_cm": float(sent)})
                sent += 1
                await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(pub.close)
        await until(lambda: source.statistics().acks == sent)
    stats = source.statistics()
    assert (stats.connects, stats.disconnects) == (1, 0)
