"""The private Mosquitto and InfluxDB launcher, against the real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.core import errors
from gateway.testing import stack
from gateway.testing.stack import (
    PrivateInfluxDB,
    PrivateMosquitto,
    Stack,
    StackError,
    find_executable,
    free_port,
)

DEFAULT_PORTS = {1883, 8086, 8088}


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def mqtt(tool: str, broker: PrivateMosquitto, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_executable(tool), "-h", broker.host, "-p", str(broker.port), *args],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


def read_one(broker: PrivateMosquitto, topic: str, *args: str) -> str:
    result = mqtt("mosquitto_sub", broker, "-t", topic, "-C", "1", "-W", "5", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def write(
    influx: PrivateInfluxDB, db: str, body: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{influx.url}/write",
        params={"db": db, "precision": "ns"},
        content=body.encode(),
        auth=auth,
        trust_env=False,
        timeout=10,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[PrivateInfluxDB]:
    with PrivateInfluxDB(tmp_path / "influxdb") as server:
        yield server


def test_free_port_is_bindable_and_not_a_default() -> None:
    port = free_port()
    assert port not in DEFAULT_PORTS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stack_error_is_the_gateways_own() -> None:
    # The demo command catches gateway.core.errors.StackError: it must be this very class.
    assert StackError is errors.StackError
    assert issubclass(StackError, RuntimeError)


def test_missing_binary_names_the_apt_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(stack, "_EXTRA_DIRS", (str(tmp_path),))
    with pytest.raises(StackError, match="apt-get install -y influxdb"):
        find_executable("influxd")
    with pytest.raises(StackError, match="apt-get install -y mosquitto"):
        find_executable("mosquitto")


def test_retained_message_survives_broker_restart(broker: PrivateMosquitto) -> None:
    assert broker.port not in DEFAULT_PORTS
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    topic = "garden/test/gateway/gw1/status"
    published = mqtt("mosquitto_pub", broker, "-t", topic, "-m", "online", "-r", "-q", "1")
    assert published.returncode == 0, published.stderr
    assert read_one(broker, topic) == "online"

    first_pid = broker.pid
    broker.restart()

    assert broker.pid != first_pid
    assert (broker.workdir / "persistence" / "mosquitto.db").exists()
    assert read_one(broker, topic) == "online"
    # Without "user root" a root-started broker drops to user mosquitto and cannot persist.
    assert ("user root" in broker.conf_path.read_text()) == (os.geteuid() == 0)


def test_queued_message_of_offline_session_survives_broker_crash(
    broker: PrivateMosquitto,
) -> None:
    session = ("-c", "-i", "gateway-test", "-q", "1", "-t", "garden/+/+/telemetry")
    subscribed = mqtt("mosquitto_sub", broker, *session, "-E")
    assert subscribed.returncode == 0, subscribed.stderr
    payload = '{"level_cm": 118.25, "marker": "queued-while-offline"}'
    published = mqtt(
        "mosquitto_pub", broker, "-t", "garden/s1/p1/telemetry", "-m", payload, "-q", "1"
    )
    assert published.returncode == 0, published.stderr

    db = broker.persistence_dir / "mosquitto.db"
    wait_until(
        lambda: db.exists() and b"queued-while-offline" in db.read_bytes(),
        timeout=10,
        what="the autosave to write the queued message",
    )
    broker.kill()
    broker.start()

    assert read_one(broker, "garden/+/+/telemetry", *session) == payload


def test_broker_with_password_refuses_anonymous_clients(tmp_path: Path) -> None:
    with PrivateMosquitto(tmp_path, username="gateway", password="s3cret pass") as broker:
        anonymous = mqtt("mosquitto_pub", broker, "-t", "garden/x", "-m", "1", "-q", "1")
        wrong = mqtt(
            "mosquitto_pub", broker, "-u", "gateway", "-P", "wrong", "-t", "garden/x", "-m", "1"
        )
        right = mqtt(
            "mosquitto_pub",
            broker,
            *("-u", "gateway", "-P", "s3cret pass", "-t", "garden/x", "-m", "1", "-q", "1"),
        )
    assert anonymous.returncode != 0
    assert wrong.returncode != 0
    assert right.returncode == 0, right.stderr


def test_broker_stop_and_kill_leave_no_process(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    pid = broker.pid
    assert pid is not None
    assert broker.running
    broker.stop()
    assert broker.pid is None
    assert not process_exists(pid)
    assert not port_open(broker.port)

    broker.start()
    pid = broker.pid
    assert pid is not None
    broker.kill()
    assert not process_exists(pid)
    broker.stop()  # stopping a stopped server is harmless


def test_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path, extra_conf="no_such_option true")
    with pytest.raises(StackError, match="no_such_option"):
        broker.start()
    assert broker.pid is None


def test_influx_stores_points_keeps_them_across_restart_and_stops(
    influx: PrivateInfluxDB,
) -> None:
    assert influx.port not in DEFAULT_PORTS
    assert influx.rpc_port not in DEFAULT_PORTS
    assert influx.url == f"http://127.0.0.1:{influx.port}"
    config = influx.config_path.read_text()
    assert f'bind-address = "127.0.0.1:{influx.rpc_port}"' in config
    assert f'bind-address = "127.0.0.1:{influx.port}"' in config

    influx.create_database("garden")
    lines = (
        "polder,site=sangatta,device=p1 level_cm=120.5 1700000000000000000\n"
        "polder,site=sangatta,device=p1 level_cm=121.0 1700000001000000000\n"
    )
    assert write(influx, "garden", lines).status_code == 204

    expected = [
        {"time": 1700000000000000000, "level_cm": 120.5, "site": "sangatta", "device": "p1"},
        {"time": 1700000001000000000, "level_cm": 121.0, "site": "sangatta", "device": "p1"},
    ]
    query = 'SELECT "level_cm" FROM "polder" GROUP BY *'
    assert influx.points("garden", query) == expected
    assert influx.count("garden", "polder", "level_cm") == 2
    assert influx.count("garden", "no_such_measurement", "level_cm") == 0

    port, first_pid = influx.port, influx.pid
    influx.restart()
    assert influx.port == port
    assert influx.pid != first_pid
    assert influx.points("garden", query) == expected

    pid = influx.pid
    assert pid is not None
    influx.stop()
    assert not influx.running
    assert influx.pid is None
    assert not process_exists(pid)
    assert not port_open(port)


def test_influx_query_error_is_a_stack_error(influx: PrivateInfluxDB) -> None:
    with pytest.raises(StackError, match="database not found"):
        influx.query('SELECT * FROM "m"', db="missing")


def test_influx_with_auth_refuses_anonymous_writes(tmp_path: Path) -> None:
    with PrivateInfluxDB(tmp_path, auth=("admin", "pa'ss")) as influx:
        influx.create_database("garden")
        line = "garden_env,site=s,device=d temperature_c=27.5 1700000000000000000"
        assert write(influx, "garden", line).status_code == 401
        assert write(influx, "garden", line, auth=("admin", "pa'ss")).status_code == 204
        assert influx.count("garden", "garden_env", "temperature_c") == 1
        # The admin exists now; creating it again on start must still work.
        influx.restart()
        assert influx.count("garden", "garden_env", "temperature_c") == 1


def test_stack_starts_and_stops_both(tmp_path: Path) -> None:
    with Stack(tmp_path) as both:
        assert both.influx is not None
        pids = [both.mosquitto.pid, both.influx.pid]
        assert both.mosquitto.running
        assert both.influx.running
        assert both.influx.workdir != both.mosquitto.workdir
    assert not both.mosquitto.running
    assert not both.influx.running
    assert not any(pid is not None and process_exists(pid) for pid in pids)

    with Stack(tmp_path / "mqtt-only", influx=False) as mqtt_only:
        assert mqtt_only.influx is None
        assert mqtt_only.mosquitto.running
    assert not mqtt_only.mosquitto.running


@pytest.mark.parametrize("server_class", [PrivateMosquitto, PrivateInfluxDB])
def test_port_taken_after_choosing_it_is_chosen_again(
    server_class: type[PrivateMosquitto | PrivateInfluxDB],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    real_free_port = stack.free_port
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        taken = int(stranger.getsockname()[1])
        offers = iter([taken])
        monkeypatch.setattr(stack, "free_port", lambda: next(offers, None) or real_free_port())

        with server_class(tmp_path) as server:
            assert server.port != taken
            assert server.running
            first_log = server.log_path.read_text().lower()
    assert "address already in use" in first_log


def test_a_given_port_that_is_taken_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        taken = int(stranger.getsockname()[1])
        broker = PrivateMosquitto(tmp_path, port=taken)
        with pytest.raises(StackError, match=r"(?i)address already in use"):
            broker.start()
    assert broker.pid is None


def test_servers_left_running_are_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.testing.stack import Stack\n"
        "stack = Stack(Path(sys.argv[1]))\n"
        "stack.start()\n"
        "assert stack.influx is not None\n"
        "print(stack.mosquitto.pid, stack.influx.pid, flush=True)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.returncode == 0, child.stderr
    pids = [int(pid) for pid in child.stdout.split()]
    assert len(pids) == 2
    assert not any(process_exists(pid) for pid in pids)
    assert child.stderr.count("stopping leftover") == 2, child.stderr
