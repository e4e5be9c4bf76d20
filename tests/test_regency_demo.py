"""``garden-gateway regency-demo`` (issue 17, part 6): a private central broker, simulated parks
and the regency service; the pages answer, every park is listed, Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.testing.stack import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_the_regency_demo_lists_its_parks_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "demo.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "regency-demo", "--parks", "3", "--api-port",
             str(port), "--workdir", str(tmp_path / "work")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: "Ctrl-C stops everything" in out.read_text(), timeout=30,
                 what="the banner")
        text = out.read_text()
        assert f"http://127.0.0.1:{port}/operator" in text
        token = text.split("token ", 1)[1].split()[0]

        def parks() -> list[dict[str, object]]:
            try:
                body: list[dict[str, object]] = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/parks", timeout=2).json()
            except httpx.HTTPError:
                return []
            return body

        wait_for(lambda: len(parks()) == 3, timeout=30, what="three parks listed")
        assert {p["site"] for p in parks()} == {"taman-bukit-pelangi", "taman-sangatta",
                                                "taman-bengalon"}
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
        assert "Taman Kabupaten" in page.text
        report = httpx.get(f"http://127.0.0.1:{port}/api/v1/outages", timeout=5,
                           headers={"Authorization": f"Bearer {token}"})
        assert report.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
