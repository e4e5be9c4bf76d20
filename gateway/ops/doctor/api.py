"""``api``: the running gateway's ``/health``."""

from __future__ import annotations

import httpx

from gateway.config import Config
from gateway.ops.doctor.runner import Result, age_text


def check_api(cfg: Config, timeout_s: float) -> list[Result]:
    api = cfg.api
    if not api.enabled:
        return [Result("api", "api", "OK", "disabled in the config (api.enabled: false)")]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(api.host,  # noqa: S104
                                                                      api.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{api.port}/health"
    name = f"api {url}"
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.ConnectError:
        return [Result("api", name, "WARN", "nothing answers: the gateway is not running here",
                       "`sudo systemctl status garden-gateway`")]
    except httpx.HTTPError as exc:
        return [Result("api", name, "WARN", f"{type(exc).__name__}: {exc}",
                       "`sudo systemctl status garden-gateway`")]
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or "status" not in body:
        return [Result("api", name, "FAIL", f"answered {response.status_code}, not as the "
                       "gateway does: another program has this port",
                       "change api.port, or stop the other program (`sudo ss -ltnp`)")]
    uptime = body.get("uptime_s")
    up = f", up {age_text(float(uptime))}" if isinstance(uptime, int | float) else ""
    if body["status"] != "ok":
        return [Result("api", name, "WARN", f"the gateway says {body['status']!r}{up}",
                       "it is shutting down; `sudo systemctl status garden-gateway`")]
    return [Result("api", name, "OK", f"the running gateway answers{up}")]
