"""The gateway's HTTPS certificate: the one configured, or a self-signed one made here.

A self-signed certificate (ECDSA P-256) is made under ``data_dir/tls`` on first start, for
``localhost``, this host's name, the name + ``.local`` (mDNS), 127.0.0.1 and this host's
addresses. Later starts reuse it while it is valid for at least ``RENEW_BEFORE_S`` and still
names every one of them; otherwise a new one is made (and its new fingerprint logged). The
technician compares the SHA-256 fingerprint the phone shows with the one ``doctor`` prints.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import ApiTlsConfig

log = logging.getLogger(__name__)

CERT_NAME = "gateway.crt"
KEY_NAME = "gateway.key"
VALID_DAYS = 3650
RENEW_BEFORE_S = 30 * 86400

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    fingerprint: str
    made: bool = False


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER bytes, as a browser shows it: ``AB:CD:...``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def file_fingerprint(path: Path) -> str:
    return fingerprint(path.read_bytes())


def host_names() -> tuple[list[str], list[IpAddress]]:
    """The DNS names and IP addresses this host is reached by on the park's network."""
    host = socket.gethostname().split(".")[0] or "localhost"
    names = list(dict.fromkeys(["localhost", host, f"{host}.local"]))
    addresses: list[IpAddress] = [ipaddress.ip_address("127.0.0.1")]
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        infos = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    addresses.extend(_interface_addresses())
    return names, list(dict.fromkeys(addresses))


def _interface_addresses() -> list[IpAddress]:
    """IPv4 addresses of the up interfaces (Linux, without extra packages)."""
    found: list[IpAddress] = []
    try:
        # The address the host would use to reach the outside (no packet is sent).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            found.append(ipaddress.ip_address(s.getsockname()[0]))
    except OSError:
        pass
    try:
        text = Path("/proc/net/fib_trie").read_text()
    except OSError:
        return found
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "/32 host LOCAL" in line and i > 0:
            try:
                found.append(ipaddress.ip_address(lines[i - 1].split()[-1]))
            except ValueError:
                continue
    return found


def _covers(cert: x509.Certificate, names: list[str], addresses: list[IpAddress]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_names = set(san.get_values_for_type(x509.DNSName))
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    return set(names) <= have_names and set(addresses) <= have_ips


def _still_good(cert_path: Path, key_path: Path, names: list[str],
                addresses: list[IpAddress], now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    remaining = (cert.not_valid_after_utc - now).total_seconds()
    return (cert.not_valid_before_utc <= now and remaining > RENEW_BEFORE_S
            and _covers(cert, names, addresses))


def self_signed(directory: Path, *, names: list[str] | None = None,
                addresses: list[IpAddress] | None = None,
                now: datetime.datetime | None = None) -> CertFiles:
    """The certificate under ``directory``: reused while good, else made (key mode 0600)."""
    if names is None or addresses is None:
        found_names, found_addresses = host_names()
        names = found_names if names is None else names
        addresses = found_addresses if addresses is None else addresses
    now = now or datetime.datetime.now(datetime.UTC)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if _still_good(cert_path, key_path, names, addresses, now):
        return CertFiles(cert_path, key_path, file_fingerprint(cert_path))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[1] if len(names) > 1
                                            else names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Garden Gateway")])
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(a) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    tmp_key = key_path.with_suffix(".key.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(tmp_key, 0o600)
    tmp_cert = cert_path.with_suffix(".crt.tmp")
    tmp_cert.write_bytes(cert_pem)
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
    return CertFiles(cert_path, key_path, fingerprint(cert_pem), made=True)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ for the API, the modern defaults of Python's ssl module."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def certificate_for(tls: ApiTlsConfig | None, data_dir: Path) -> CertFiles | None:
    """The certificate ``api.tls`` asks for (made if self-signed), or None when TLS is off."""
    if tls is None or not tls.enabled:
        return None
    if tls.self_signed:
        return self_signed(data_dir / "tls")
    assert tls.cert_file is not None
    assert tls.key_file is not None
    return CertFiles(tls.cert_file, tls.key_file, file_fingerprint(tls.cert_file))
