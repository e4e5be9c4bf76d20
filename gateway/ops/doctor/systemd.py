"""``systemd``: the unit's state, whether it is enabled, its automatic restarts."""

from __future__ import annotations

import subprocess

from gateway.ops.doctor.runner import CommandRunner, Result

_NO_SYSTEMD = ("not been booted with systemd", "Failed to connect to bus",
               "System has not been booted")


def check_systemd(unit: str, run: CommandRunner, timeout_s: float) -> list[Result]:
    name = f"systemd {unit}"
    status_fix = f"on the Pi: `systemctl status {unit}`"
    try:
        out = run(["systemctl", "show", unit, "--property=LoadState,ActiveState,SubState,"
                   "UnitFileState,NRestarts,ActiveEnterTimestamp,Result"], timeout_s)
    except FileNotFoundError:
        return [Result("systemd", name, "WARN", "no systemctl: cannot ask systemd here",
                       status_fix)]
    except subprocess.TimeoutExpired:
        return [Result("systemd", name, "WARN", f"systemctl did not answer in {timeout_s:g} s",
                       f"try `systemctl status {unit}`")]
    said = out.stdout + out.stderr
    if any(s in said for s in _NO_SYSTEMD):
        return [Result("systemd", name, "WARN",
                       "cannot ask systemd here (it is not running as init: a container?)",
                       status_fix)]
    props = dict(line.partition("=")[::2] for line in out.stdout.splitlines() if "=" in line)
    if out.returncode != 0 or "ActiveState" not in props:
        return [Result("systemd", name, "WARN",
                       f"systemctl failed ({out.returncode}): {said.strip()[:120]}",
                       status_fix)]
    if props.get("LoadState") == "not-found":
        return [Result("systemd", name, "WARN", f"{unit}.service is not installed",
                       "install it: `sudo systemd/install.sh` in the garden-gateway checkout "
                       "(or give --unit if it has another name)")]
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    restarts = int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else 0
    enabled = props.get("UnitFileState", "")
    since = props.get("ActiveEnterTimestamp", "")
    logs = f"`journalctl -u {unit} -n 50` says why"
    if active == "failed":
        return [Result("systemd", name, "FAIL",
                       f"failed (result {props.get('Result', '?')}, {restarts} restarts)",
                       f"{logs}; then `sudo systemctl restart {unit}`")]
    if sub == "auto-restart":
        return [Result("systemd", name, "FAIL",
                       f"crashing and restarting ({restarts} restarts so far)", logs)]
    if active != "active":
        return [Result("systemd", name, "WARN", f"{active} ({sub})",
                       f"start it: `sudo systemctl start {unit}`")]
    found = f"active ({sub}) since {since or '?'}, {enabled or 'enablement unknown'}"
    if enabled not in ("enabled", "enabled-runtime", "static"):
        return [Result("systemd", name, "WARN", f"{found}: will not start after a power cut",
                       f"`sudo systemctl enable {unit}`")]
    if restarts:
        return [Result("systemd", name, "WARN",
                       f"{found}, restarted {restarts} times after a crash",
                       f"`journalctl -u {unit} -b | grep -i -B2 -A20 traceback` shows why")]
    return [Result("systemd", name, "OK", found)]
