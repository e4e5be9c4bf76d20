"""``api``: the running gateway's ``/health``, its HTTPS certificate and how it is served."""

from __future__ import annotations

import hashlib
import socket
import ssl

import httpx

from gateway.config import Config
from gateway.ops.doctor.runner import Result, age_text


def check_api(cfg: Config, timeout_s: float) -> list[Result]:
    api = cfg.api
    if not api.enabled:
        return [Result("api", "api", "OK", "disabled in the config (api.enabled: false)")]
    return [*_check_health(cfg, timeout_s), *check_https(cfg, timeout_s)]


def check_https(cfg: Config, timeout_s: float) -> list[Result]:
    """The certificate's SHA-256 fingerprint (what the phone must show), and the HTTP rules."""
    api = cfg.api
    tls = api.tls if api.tls is not None and api.tls.enabled else None
    if tls is None:
        if api.host in ("127.0.0.1", "::1", "localhost"):
            return []  # only this machine reaches it
        return [Result("api", "api https", "WARN", "api.tls is off: the operator token travels "
                       "in clear on the park's network", "set api.tls.self_signed: true (or "
                       "cert_file and key_file) and restart")]
    results: list[Result] = []
    cert = (cfg.data_dir / "tls" / "gateway.crt") if tls.self_signed else tls.cert_file
    assert cert is not None
    host = _local(api.host)
    name = f"api https://{f'[{host}]' if ':' in host else host}:{tls.port}"
    try:
        on_disk = _fingerprint(cert.read_bytes(), pem=True)
    except (OSError, ValueError) as exc:
        made = " (made on the gateway's first start)" if tls.self_signed else ""
        results.append(Result("api", name, "WARN", f"no certificate at {cert}{made}: {exc}",
                               "start the gateway, or fix api.tls.cert_file"))
        on_disk = None
    if on_disk is not None:
        served = _served_fingerprint(host, tls.port, timeout_s)
        if served is None:
            results.append(Result("api", name, "WARN", f"certificate SHA-256 {on_disk} "
                                  "(nothing answers on HTTPS: the gateway is not running here)",
                                  "`sudo systemctl status garden-gateway`"))
        elif served != on_disk:
            results.append(Result("api", name, "FAIL", f"serves SHA-256 {served}, but {cert} "
                                  f"is {on_disk}", "restart the gateway to serve the new "
                                  "certificate"))
        else:
            results.append(Result("api", name, "OK", f"certificate SHA-256 {on_disk}",
                                  "compare it with what the phone's browser shows for the "
                                  "certificate before signing in"))
    # api.operator_over_http is warned about by the config check (a LoadedConfig warning).
    return results


def _local(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def _fingerprint(data: bytes, *, pem: bool) -> str:
    der = ssl.PEM_cert_to_DER_cert(data.decode("ascii")) if pem else data
    return hashlib.sha256(der).digest().hex(":").upper()


def _served_fingerprint(host: str, port: int, timeout_s: float) -> str | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only to read the certificate it serves, no data sent
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    except OSError:
        return None
    return _fingerprint(der, pem=False) if der else None


def _check_health(cfg: Config, timeout_s: float) -> list[Result]:
    api = cfg.api
    host = _local(api.host)
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
