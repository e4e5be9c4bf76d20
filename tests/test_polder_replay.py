"""``garden-gateway polder-replay`` (issue 16, part 8): a labelled storm in a CSV file, replayed
through the flood watch the gateway runs, scored; a broken file said plainly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from devices.simulators.storm import storm
from gateway.ops.polder_replay import Row, write_csv

T0 = 1_800_000_000 * 10**9


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "polder-replay", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_labelled_storm_is_replayed_and_scored(tmp_path: Path) -> None:
    s = storm(seed=3, start_ns=T0, rise_per_h=30, hours=12, crest=270, stuck_at_h=0.5)
    path = tmp_path / "storm.csv"
    write_csv(path, [Row(r.time_ns, r.value, true=r.true, spike=r.spike, stuck=r.stuck)
                     for r in s.readings])
    done = replay(str(path), "--thresholds", "150,200,250")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "polder_level alert_level=siaga from waspada" in out
    assert "polder_sensor_fault alert_level=normal (flatline)" in out
    assert f"{len(s.readings)} readings of replay replayed" in out
    assert "| Siaga/Awas crossings alerted (of 2) | 100.0 % | >= 95 % |" in out
    assert "| spikes rejected (of 5) | 100.0 % | 100 % |" in out
    assert "| false level alerts | 0 |" in out


def test_the_polder_comes_from_the_config_and_a_broken_line_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "gateway": {"id": "gw", "site": "taman"},
        "polder": [{"device": "polder-1", "field": "level_m", "unit": "m",
                    "thresholds": {"waspada": 0.9, "siaga": 1.1, "awas": 1.3}}]}))
    good = tmp_path / "levels.csv"
    good.write_text("time,level\n2027-01-15T08:00:00Z,0.85\n2027-01-15T08:01:00+08:00,0.86\n"
                    "1800000120,0.95\n")
    done = replay(str(good), "--config", str(config), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "3 readings of polder-1 replayed" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("time,level\n1800000000,0.85\n2027-01-15 08:02,0.86\n")
    done = replay(str(bad), "--config", str(config))
    assert done.returncode == 2
    assert "bad.csv line 3: time '2027-01-15 08:02' has no time zone" in done.stderr
    done = replay(str(good), "--config", str(config), "--polder", "polder-9")
    assert done.returncode == 2
    assert "no polder polder-9 (polders: polder-1)" in done.stderr
