"""``broker``: an MQTT connect with the gateway's settings, then the gateway's own status.

The connect uses the gateway's host, port, TLS, credentials and protocol, under a client id of
its own and a clean session: the gateway's id would throw the running gateway off its
persistent session. Then the gateway's retained status topic says whether it is online.

Deadlines here are real time (``time.monotonic``), not a :class:`~gateway.core.clock.Clock`:
they bound paho's blocking network loop on a real socket.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import Config
from gateway.ops.doctor.config import SECRETS_ENV
from gateway.ops.doctor.runner import LOCAL_HOSTS, Result
from gateway.park.state_topics import gateway_status_topic


def _broker_fix_unreachable(host: str) -> str:
    if host in LOCAL_HOSTS:
        return "is mosquitto running? `sudo systemctl status mosquitto`"
    return f"is the broker at {host} up, and does mqtt.host/mqtt.port name it?"


@dataclass(slots=True)
class _MqttProbe:
    connack: ReasonCode | None = None
    disconnected: bool = False
    subscribed: list[ReasonCode] | None = None
    unsubscribed: bool = False
    status: bytes | None = None


def check_broker(cfg: Config, timeout_s: float) -> list[Result]:
    """Connect as the gateway would, with another client id; then read its status topic."""
    # The gateway's own TLS settings, for a true verdict.
    from gateway.sources.mqtt import tls_context

    m = cfg.mqtt
    name = f"broker {m.host}:{m.port}"
    v5 = m.protocol == "5"
    probe = _MqttProbe()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        # Never the gateway's id: the broker would drop the gateway's own connection.
        client_id=f"gg-doctor-{secrets.token_hex(4)}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )

    def on_connect(c: paho.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        probe.connack = reason

    def on_disconnect(c: paho.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        probe.disconnected = True

    def on_subscribe(c: paho.Client, u: Any, mid: int, reasons: list[ReasonCode],
                     p: Any) -> None:
        probe.subscribed = reasons

    def on_unsubscribe(c: paho.Client, u: Any, mid: int, reasons: Any, p: Any) -> None:
        probe.unsubscribed = True

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        probe.status = bytes(msg.payload)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_unsubscribe = on_unsubscribe
    client.on_message = on_message
    client.connect_timeout = timeout_s
    tls = ""
    if m.username:
        client.username_pw_set(m.username,
                               m.password.get_secret_value() if m.password else None)
    try:
        if m.tls is not None:
            tls = ", TLS"
            client.tls_set_context(tls_context(m.tls))
    except (OSError, ssl.SSLError) as exc:
        return [Result("broker", name, "FAIL", f"cannot load the TLS files: {exc}",
                       "check mqtt.tls.ca_file / cert_file / key_file")]
    deadline = time.monotonic() + timeout_s
    try:
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0  # nothing of ours stays at the broker
            client.connect(m.host, m.port, keepalive=max(m.keepalive_s, 10), clean_start=True,
                           properties=props)
        else:
            client.connect(m.host, m.port, keepalive=max(m.keepalive_s, 10))
    except ssl.SSLCertVerificationError as exc:
        return [Result("broker", name, "FAIL",
                       f"TLS: the broker's certificate is not accepted ({exc.verify_message})",
                       "check mqtt.tls.ca_file, and that mqtt.host is a name in the "
                       "certificate")]
    except ssl.SSLError as exc:
        return [Result("broker", name, "FAIL", f"TLS handshake failed ({exc.reason})",
                       "does the broker speak TLS on this port (usually 8883)? check mqtt.port "
                       "and mqtt.tls")]
    except socket.gaierror as exc:
        return [Result("broker", name, "FAIL", f"cannot resolve {m.host}: {exc.strerror}",
                       "check mqtt.host and the Pi's DNS (`getent hosts " + m.host + "`)")]
    except ConnectionRefusedError:
        return [Result("broker", name, "FAIL", "connection refused",
                       _broker_fix_unreachable(m.host))]
    except TimeoutError:
        return [Result("broker", name, "FAIL", f"no answer within {timeout_s:g} s",
                       "a firewall or a network path that drops packets; check the route "
                       "to the broker")]
    except OSError as exc:
        return [Result("broker", name, "FAIL", f"cannot connect: {exc.strerror or exc}",
                       _broker_fix_unreachable(m.host))]
    try:
        return _broker_session(cfg, client, probe, name, tls, deadline, timeout_s)
    finally:
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _loop_until(client: paho.Client, done: Callable[[], bool], deadline: float) -> bool:
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if client.loop(timeout=min(0.05, left)) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return done()
    return True


def _broker_session(cfg: Config, client: paho.Client, probe: _MqttProbe, name: str, tls: str,
                    deadline: float, timeout_s: float) -> list[Result]:
    m = cfg.mqtt
    got = _loop_until(client, lambda: probe.connack is not None or probe.disconnected,
                      deadline)
    if probe.connack is None:
        if not got:
            return [Result("broker", name, "FAIL", f"no CONNACK within {timeout_s:g} s",
                           "is this port an MQTT broker? does it want TLS (mqtt.tls)?")]
        return [Result("broker", name, "FAIL", "the broker closed the connection before "
                       "answering", "does the broker want TLS on this port (mqtt.tls), or "
                       "another protocol version (mqtt.protocol)? its log says why")]
    reason = probe.connack
    if reason.is_failure:
        value = reason.value
        if value in (0x86, 0x87, 0x04, 0x05, 0x8C):
            who = f"user {m.username!r}" if m.username else "no username"
            return [Result("broker", name, "FAIL", f"not authorised ({reason}; {who})",
                           "check mqtt.username and GARDEN_GATEWAY_MQTT__PASSWORD in "
                           f"{SECRETS_ENV} (or mqtt.password_file)")]
        if value in (0x84, 0x01):
            return [Result("broker", name, "FAIL", f"refused: {reason}",
                           'the broker does not speak this MQTT version: set mqtt.protocol: '
                           '"3.1.1"' if m.protocol == "5" else "upgrade the broker")]
        if value in (0x85, 0x02):
            return [Result("broker", name, "FAIL", f"refused the client id: {reason}",
                           "the broker restricts client ids; allow garden-gateway-* and "
                           "gg-doctor-* in its config")]
        return [Result("broker", name, "FAIL", f"refused: {reason}",
                       "the broker's log says why (`journalctl -u mosquitto`)")]
    who = f" as {m.username}" if m.username else ""
    results = [Result("broker", name, "OK",
                      f"connected and accepted (MQTT {m.protocol}{tls}{who})")]
    if cfg.liveness.publish_mqtt:
        results.append(_gateway_status(cfg, client, probe, deadline))
    client.disconnect()
    _loop_until(client, lambda: probe.disconnected, min(deadline, time.monotonic() + 1.0))
    return results


def _gateway_status(cfg: Config, client: paho.Client, probe: _MqttProbe,
                    deadline: float) -> Result:
    topic = gateway_status_topic(cfg.gateway.site, cfg.gateway.id)
    name = "gateway status on MQTT"
    client.subscribe(topic, qos=1)
    if not _loop_until(client, lambda: probe.subscribed is not None, deadline):
        return Result("broker", name, "WARN", f"no answer to a subscription to {topic}",
                      "the broker is slow or drops subscriptions; look at its log")
    assert probe.subscribed is not None
    if any(r.is_failure for r in probe.subscribed):
        return Result("broker", name, "WARN", f"the broker refuses to let us read {topic}",
                      "allow reading garden/# for this user in the broker's ACL to see it")
    # The broker sends a retained message before it handles our next packet: once this
    # UNSUBACK is here, a retained status has arrived if there is one.
    client.unsubscribe(topic)
    if not _loop_until(client, lambda: probe.unsubscribed, deadline):
        return Result("broker", name, "WARN", f"no answer about {topic} in time",
                      "the broker is slow; try again with a longer --timeout")
    if probe.status == b"online":
        return Result("broker", name, "OK", f"the running gateway says online ({topic})")
    if probe.status is None:
        return Result("broker", name, "WARN", f"nothing on {topic}: the gateway has not "
                      "connected to this broker yet", "start it: `sudo systemctl start "
                      "garden-gateway`; `journalctl -u garden-gateway -n 50` says why not")
    said = probe.status.decode("utf-8", "replace")[:40]
    return Result("broker", name, "WARN", f"the gateway's last word is {said!r} ({topic}): "
                  "it is stopped or lost its connection",
                  "`sudo systemctl status garden-gateway`; `journalctl -u garden-gateway -n 50`")
