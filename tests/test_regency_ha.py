"""Two regency instances, one Alertmanager (issue 17, parts 3 and 5a): each instance keeps its
own session and the whole view; their alerts become one notification in Alertmanager; with one
instance gone the other still alerts. A real Mosquitto, Debian's prometheus-alertmanager (taken
out of its package by ./dev) and an HTTP receiver; 20 light parks."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.regency.service import Regency
from gateway.testing.stack import PrivateMosquitto, free_port
from tests.conftest import Publisher, debian_binary, until, wait_for
from tests.test_polder_e2e import Hook
from tests.test_regency import config, running, summary

ROOT = Path(__file__).resolve().parent.parent
PARKS = 20
SHIPPED = ROOT / "config" / "alertmanager.yml"


def binary(name: str) -> str:
    return debian_binary(name, "alertmanager", "prometheus-alertmanager")


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def alertmanager(tmp_path: Path, hook: Hook) -> Iterator[str]:
    """Alertmanager on 127.0.0.1 with the shipped routing, its receiver our HTTP hook, and the
    groups' timers short enough for a test."""
    shipped = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    route = {**shipped["route"], "group_wait": "1s", "group_interval": "1s"}
    cfg = {"route": {**route, "receiver": "hook", "routes": []},
           "receivers": [{"name": "hook", "webhook_configs": [
               {"url": hook.url, "send_resolved": True}]}]}
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [binary("prometheus-alertmanager"), f"--config.file={path}",
         f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=20, what="alertmanager ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_the_shipped_alertmanager_config_and_templates_pass_amtool() -> None:
    done = subprocess.run([binary("amtool"), "check-config", str(SHIPPED)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # The Indonesian template runs (on amtool's sample alerts, times moved to WITA).
    done = subprocess.run(
        [binary("amtool"), "template", "render",
         f"--template.glob={ROOT / 'config' / 'alertmanager-id.tmpl'}",
         '--template.text={{ range .Alerts }}{{ (.StartsAt.Add 28800e9).Format "15:04" }} '
         '{{ end }}{{ template "garden.id.text" . }}'],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) >= 2


def notifications(hook: Hook, alertname: str, site: str, status: str) -> list[dict[str, Any]]:
    return [a for b in hook.bodies for a in b.get("alerts", [])
            if a["labels"].get("alertname") == alertname and a["labels"].get("site") == site
            and a["status"] == status]


async def test_two_instances_see_every_park_and_alert_once_and_one_alone_still_alerts(
    tmp_path: Path, mosquitto: PrivateMosquitto, alertmanager: str, hook: Hook,
    publisher_factory: Callable[[int], Publisher],
) -> None:
    pub = publisher_factory(mosquitto.port)
    sites = [f"taman-{i:02d}" for i in range(PARKS)]
    for site in sites:
        pub.publish(f"garden/{site}/gateway/gw-{site}/status", b"online", retain=True)
        pub.publish(f"garden/{site}/summary", json.dumps(summary(site)), retain=True)

    def instance(n: int) -> Any:
        return config(tmp_path / f"regency-{n}", mosquitto, stale_after_s=600,
                      mqtt={"host": "127.0.0.1", "port": mosquitto.port,
                            "client_id": f"regency-{n}"},
                      alertmanager={"urls": [alertmanager], "resend_s": 0.5})

    async with running(instance(1)) as (a, http_a), running(instance(2)) as (b, _):
        for r in (a, b):
            await until(all_up(r), 20)
        assert len((await http_a.get("/api/v1/parks")).json()) == PARKS
        pub.publish("garden/taman-05/gateway/gw-taman-05/status", b"offline", retain=True)
        await until(lambda: notifications(hook, "TamanMati", "taman-05", "firing"), 20)
        # Both instances posted it, again and again: still one notification.
        posts = (assert_posting(a), assert_posting(b))
        await until(lambda: a.alertmanager is not None and b.alertmanager is not None
                    and a.alertmanager.posts >= posts[0] + 3
                    and b.alertmanager.posts >= posts[1] + 3, 20)
        assert len(notifications(hook, "TamanMati", "taman-05", "firing")) == 1
        pub.publish("garden/taman-05/gateway/gw-taman-05/status", b"online", retain=True)
        await until(lambda: notifications(hook, "TamanMati", "taman-05", "resolved"), 20)
    # Instance 1 gone for good; instance 2 alone still sees and alerts.
    async with running(instance(2)) as (b, _):
        await until(lambda: len(b.fleet.parks) == PARKS, 20)
        pub.publish("garden/taman-06/bridge/connection", b"0", retain=True)
        await until(lambda: notifications(hook, "TamanTerputus", "taman-06", "firing"), 20)
    assert len(notifications(hook, "TamanMati", "taman-05", "resolved")) == 1
    assert notifications(hook, "TamanMati", "taman-06", "firing") == []


def all_up(r: Regency) -> Callable[[], bool]:
    return lambda: len(r.fleet.parks) == PARKS and all(
        p.state == "up" for p in r.fleet.parks.values())


def assert_posting(r: Regency) -> int:
    assert r.alertmanager is not None
    return r.alertmanager.posts
