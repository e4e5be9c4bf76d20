"""``config``: the config file as the service would load it, secrets included.

Secrets come from the environment, as for the service, plus ``/etc/garden-gateway/secrets.env``
(the unit's ``EnvironmentFile``) for what the shell does not set; without it a doctor run from a
shell would call right passwords wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.config import LoadedConfig, load_config
from gateway.core.errors import ConfigError
from gateway.ops.doctor.runner import Result

SECRETS_ENV = Path("/etc/garden-gateway/secrets.env")


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile reads them (comments, quotes)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def doctor_env(env_file: Path | None, environ: Mapping[str, str],
               notes: list[str]) -> dict[str, str] | None:
    """The service's environment as far as we can see it; None: ``env_file`` is unusable.

    The shell's variables win over the file's, so a technician can try a value out.
    """
    path = env_file or SECRETS_ENV
    try:
        from_file = read_env_file(path)
    except FileNotFoundError:
        if env_file is not None:
            notes.append(f"{path}: no such file")
            return None
        return dict(environ)
    except OSError as exc:
        if env_file is not None:
            notes.append(f"{path}: cannot read: {exc.strerror}")
            return None
        notes.append(f"cannot read {path} ({exc.strerror}): the passwords in it are not "
                     "used here; run doctor with sudo to check with them")
        return dict(environ)
    return {**from_file, **environ}


def check_config(path: Path, env: Mapping[str, str] | None,
                 notes: Sequence[str]) -> tuple[Result, LoadedConfig | None]:
    fix = (f"edit {path} (each line names the key), then run doctor again "
           f"(or `garden-gateway check-config --config {path}`)")
    if env is None:
        return Result("config", "config", "FAIL", "the environment file is not usable",
                      "give an --env-file that exists and can be read", tuple(notes)), None
    try:
        loaded = load_config(path, env=env)
    except ConfigError as exc:
        n = len(exc.problems)
        return Result("config", "config", "FAIL",
                      f"{path}: {n} problem{'s' if n != 1 else ''}", fix,
                      (*exc.problems, *notes)), None
    cfg = loaded.config
    found = f"{path} is valid (gateway {cfg.gateway.id}, site {cfg.gateway.site})"
    warnings = (*loaded.warnings, *notes)
    if warnings:
        return Result("config", "config", "WARN", found + ", with warnings",
                      "see the warnings below", warnings), loaded
    return Result("config", "config", "OK", found), loaded
