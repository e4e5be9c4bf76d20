"""``garden-gateway devices``: one broker account per device, and the Mosquitto ACL made from them.

Four files, their paths in the config's ``broker`` section:

- the accounts file (YAML, ``/etc/garden-gateway/broker-accounts.yaml``): the source of truth.
  Each account has an id (its broker user name, and the device id), a kind (``native``,
  ``tasmota``, ``esphome``, ``collectd``; ``topics`` for an account that maps to no single
  device, e.g. Telegraf; ``gateway`` for the gateway's own), a site (native) and extra topics;
- the password file (Mosquitto's ``password_file``): ``user:$7$...`` lines. Entries of accounts
  are added and removed here; lines of other users are kept as they are;
- the ACL file (Mosquitto's ``acl_file``): made from the accounts file, never edited by hand;
- the enforce file (a Mosquitto config snippet, ``conf.d/garden-acl.conf``) holding the line
  ``acl_file ...``: while it exists the broker enforces the ACL. Writing it is the explicit last
  step of the migration at a running park (``devices enforce``); install.sh writes it on a
  fresh install.

Every rewrite is atomic (a temporary file beside the target, fsync, rename, fsync of the
folder) and keeps the file's mode and owner, so Mosquitto (group ``mosquitto``) can still read
it; one lock file beside the accounts file serialises concurrent runs.

The hashes are Mosquitto 2.0's ``$7$`` format (PBKDF2-HMAC-SHA512, 101 iterations as
``mosquitto_passwd`` uses, a 12-byte random salt), made here with :mod:`hashlib` rather than by
``mosquitto_passwd -b``: that would put the password on a command line, where every local user
can read it in ``/proc/<pid>/cmdline``, and it rewrites the file its own way. The passwords made
here are 128 random bits, so the iteration count is not what protects them. tests/test_accounts.py
checks that the real broker accepts them.

The ACL (Mosquitto 2.0): each account gets a ``user`` block that allows only its own topics;
``deny`` lines are checked before any grant, so a native device's ``garden/<site>/<id>/#``
never includes the topics the gateway and the bridge own. No ``pattern`` lines: they would
apply to every user, the gateway included.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import grp
import hashlib
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import yaml

from gateway.config import DEFAULT_CONFIG_PATH, BrokerConfig, Config, LoadedConfig
from gateway.ops.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, load_config_or_report

Kind = Literal["native", "tasmota", "esphome", "collectd", "topics", "gateway"]
KINDS: tuple[Kind, ...] = get_args(Kind)
DEVICE_KINDS: tuple[Kind, ...] = ("native", "tasmota", "esphome", "collectd", "topics")
# The decoder formats whose topics carry the device id, and the account kind that publishes them.
FORMAT_KIND: dict[str, Kind] = {"native": "native", "tasmota": "tasmota",
                                "esphome": "esphome", "collectd": "collectd"}

DEFAULT_CONFIG = DEFAULT_CONFIG_PATH
GATEWAY_ACCOUNT = "garden-gateway"

# What the gateway (and the bridge, inside the broker) publish: no device may, whatever its
# other rights. `+` for the site: the gateway's own rules do not depend on the site.
GATEWAY_OWNED = ("garden/+/+/state", "garden/+/gateway/#", "garden/+/bridge/#",
                 "garden/+/summary")
# The gateway publishes its status, the devices' states and the park's summary. The bridge's
# garden/<site>/bridge/connection comes from inside the broker, not from the gateway's account.
GATEWAY_WRITES = ("garden/+/gateway/#", "garden/+/+/state", "garden/+/summary")

# Ids that would cover another namespace (an ESPHome id is a topic's first level; a native id
# sits beside gateway/bridge/summary), or pass for the gateway. Compared without case.
RESERVED_IDS = frozenset({
    "gateway", "bridge", "summary", "state", "tele", "stat", "cmnd", "garden", "collectd",
    "telegraf", "tasmota", "tasmotas", "esphome", "homeassistant", "$sys", "sys",
    GATEWAY_ACCOUNT, "mosquitto", "root", "admin",
})
# First levels an explicit topic may not take: they belong to a kind (use --kind instead).
KIND_NAMESPACES = frozenset({"garden", "tele", "stat", "cmnd", "collectd"})
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
MIN_PASSWORD = 8

ACCOUNTS_HEADER = """\
# Garden Gateway: the park broker's accounts, one per device. The source of truth of the
# Mosquitto ACL file: change it with `garden-gateway devices add/remove/import` (which rewrite
# the ACL and the password file, and reload Mosquitto), not by hand.
"""
ACL_HEADER = """\
# Garden Gateway: the park broker's ACL. Written by `garden-gateway devices` from the accounts
# file: do not edit. Each user may only what its block says; "deny" lines come before grants.
"""


class AccountsError(Exception):
    """Bad input or an unusable file; the message says what and how to fix it (exit 2)."""


class ReloadError(Exception):
    """The files are written, but Mosquitto was not told to reload (exit 1)."""


# -- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    kind: Kind
    site: str | None = None
    topics: tuple[str, ...] = ()

    def own_topics(self) -> tuple[str, ...]:
        """What this account may publish on (before the gateway's topics are denied)."""
        match self.kind:
            case "native":
                own: tuple[str, ...] = (f"garden/{self.site}/{self.id}/#",)
            case "tasmota":
                own = (f"tele/{self.id}/#", f"stat/{self.id}/#")
            case "esphome":
                own = (f"{self.id}/#",)
            case "collectd":
                own = (f"collectd/{self.id}/#",)
            case "gateway":
                own = GATEWAY_WRITES
            case "topics":
                own = ()
        return own + self.topics

    def acl_block(self) -> list[str]:
        lines = [f"# {self.kind}", f"user {self.id}"]
        if self.kind == "gateway":
            lines.append("topic read #")
            lines += [f"topic write {t}" for t in self.own_topics()]
            return lines
        lines += [f"topic deny {t}" for t in GATEWAY_OWNED]
        match self.kind:
            case "native" | "esphome":
                # Its own namespace both ways: the device may read commands sent to it.
                lines += [f"topic readwrite {t}" for t in self.own_topics()[:1]]
            case "tasmota":
                lines += [f"topic write {t}" for t in self.own_topics()[:2]]
                lines.append(f"topic read cmnd/{self.id}/#")
            case "collectd":
                lines += [f"topic write {t}" for t in self.own_topics()[:1]]
            case _:
                pass
        lines += [f"topic write {t}" for t in self.topics]
        return lines

    def as_yaml(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind}
        if self.site is not None:
            out["site"] = self.site
        if self.topics:
            out["topics"] = list(self.topics)
        return out


def valid_filter(topic: str) -> str | None:
    """Why ``topic`` is not a usable MQTT topic filter, or None."""
    if not topic or len(topic.encode()) > 256:
        return "a topic filter of 1 to 256 bytes"
    if any(ord(c) < 32 or c in " \x7f" for c in topic):
        return "no spaces or control characters"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' only as the whole last level"
        if "+" in level and level != "+":
            return "'+' only as a whole level"
    return None


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both filters."""
    la, lb = a.split("/"), b.split("/")
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else None
        y = lb[i] if i < len(lb) else None
        if x == "#" or y == "#":
            return True  # also the parent level: a/# matches a
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


def filter_covers(outer: str, inner: str) -> bool:
    """Whether every topic that ``inner`` matches also matches ``outer``."""
    lo, li = outer.split("/"), inner.split("/")
    for i, x in enumerate(lo):
        if x == "#":
            return True
        if i >= len(li):
            return False
        y = li[i]
        if y == "#" or (x != "+" and (y == "+" or x != y)):
            return False
    return len(lo) == len(li)


def may_publish(account: Account, topic: str) -> bool:
    """What the ACL made from ``account`` lets it publish on the concrete ``topic``."""
    if account.kind != "gateway" and any(filter_covers(d, topic) for d in GATEWAY_OWNED):
        return False
    return any(filter_covers(t, topic) for t in account.own_topics())


def check_id(account_id: str, *, reserved: Iterable[str] = ()) -> None:
    if not ID_PATTERN.fullmatch(account_id):
        raise AccountsError(
            f"{account_id!r}: an id is 1 to 64 letters, digits, '-', '_' or '.', starting "
            "with a letter or digit (no '/', '+', '#', '$', ':' or spaces)")
    taken = {r.lower() for r in (*RESERVED_IDS, *reserved)}
    if account_id.lower() in taken:
        raise AccountsError(
            f"{account_id!r} is reserved: it names a namespace of the gateway, the bridge or "
            "another kind of device (or the gateway's own account); choose another id")


def check_topic(topic: str) -> None:
    why = valid_filter(topic)
    if why is not None:
        raise AccountsError(f"topic {topic!r}: {why}")
    first = topic.split("/")[0]
    if first in ("+", "#") or first.startswith("$"):
        raise AccountsError(f"topic {topic!r} covers every namespace (or the broker's $SYS): "
                            "name its first level")
    if first in KIND_NAMESPACES:
        raise AccountsError(f"topic {topic!r} is in the namespace of a kind of device "
                            f"({first}/...): give the device its own account with --kind")
    if any(filters_overlap(topic, owned) for owned in GATEWAY_OWNED):
        raise AccountsError(f"topic {topic!r} overlaps the topics the gateway owns")


@dataclass(slots=True)
class Accounts:
    """The accounts file's content, in its order."""

    accounts: dict[str, Account] = field(default_factory=dict)

    def devices(self) -> list[Account]:
        return [a for a in self.accounts.values() if a.kind != "gateway"]

    def conflicts(self, new: Account) -> str | None:
        """Why ``new`` may not join (its topics overlap another account's), or None."""
        if new.kind == "gateway":
            return None
        mine = new.own_topics()
        for other in self.devices():
            if other.id == new.id:
                continue
            for t in mine:
                for o in other.own_topics():
                    if filters_overlap(t, o):
                        return (f"its topic {t} overlaps {o} of account {other.id!r} "
                                f"({other.kind}): no device may speak for another")
        return None

    def render_acl(self) -> str:
        blocks = [ACL_HEADER.rstrip("\n")]
        for account in self.accounts.values():
            blocks.append("\n".join(account.acl_block()))
        return "\n\n".join(blocks) + "\n"

    def render_yaml(self) -> str:
        body = {"accounts": {a.id: a.as_yaml() for a in self.accounts.values()}}
        return ACCOUNTS_HEADER + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def parse_accounts(text: str, where: str) -> Accounts:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AccountsError(f"{where}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or set(raw) - {"accounts"}:
        raise AccountsError(f"{where}: the top level must be 'accounts:', a mapping of ids")
    items = raw.get("accounts") or {}
    if not isinstance(items, dict):
        raise AccountsError(f"{where}: 'accounts' must map each id to its kind and topics")
    result = Accounts()
    for key, value in items.items():
        here = f"{where}: accounts.{key}"
        if not isinstance(key, str) or not isinstance(value, dict):
            raise AccountsError(f"{here}: each account is 'ID: {{kind: ..., ...}}'")
        unknown = set(value) - {"kind", "site", "topics"}
        if unknown:
            raise AccountsError(f"{here}: unknown key {sorted(unknown)[0]!r}")
        kind = value.get("kind")
        if kind not in KINDS:
            raise AccountsError(f"{here}.kind: one of {', '.join(KINDS)} (got {kind!r})")
        site = value.get("site")
        topics = value.get("topics") or []
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise AccountsError(f"{here}.topics: a list of topic filters")
        try:
            if kind != "gateway":
                check_id(key)
            elif not ID_PATTERN.fullmatch(key):
                raise AccountsError(f"{key!r} is not a usable user name")
            for t in topics:
                check_topic(t)
        except AccountsError as exc:
            raise AccountsError(f"{here}: {exc}") from None
        if kind == "native" and not (isinstance(site, str) and ID_PATTERN.fullmatch(site)):
            raise AccountsError(f"{here}.site: a native device's account needs its site")
        if kind == "topics" and not topics:
            raise AccountsError(f"{here}.topics: a 'topics' account needs at least one topic")
        result.accounts[key] = Account(key, kind, site if kind == "native" else None,
                                       tuple(topics))
    return result


def load_accounts(path: Path) -> Accounts:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Accounts()
    except OSError as exc:
        raise AccountsError(f"{path}: cannot read: {exc.strerror} (run it with sudo?)") from exc
    return parse_accounts(text, str(path))


# -- password file ---------------------------------------------------------------------------


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2.0's ``$7$`` entry: PBKDF2-HMAC-SHA512 of the UTF-8 password."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def verify_password(password: str, entry: str) -> bool:
    parts = entry.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    salt = base64.b64decode(parts[3])
    return secrets.compare_digest(hash_password(password, salt=salt,
                                                iterations=int(parts[2])), entry)


def new_password() -> str:
    return secrets.token_urlsafe(16)  # 128 bits, letters, digits, '-' and '_'


def check_password(password: str) -> str:
    password = password.rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise AccountsError(f"the password must be at least {MIN_PASSWORD} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in password):
        raise AccountsError("the password must not contain control characters or newlines")
    return password


@dataclass(slots=True)
class PasswordFile:
    """The lines of a Mosquitto password file, in order; other users' lines kept verbatim."""

    lines: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> PasswordFile:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise AccountsError(f"{path}: cannot read: {exc.strerror} (run it with sudo?)"
                                ) from exc
        return cls(text.splitlines())

    def users(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.lines:
            user, sep, entry = line.partition(":")
            if sep and user and not line.startswith("#"):
                out[user] = entry
        return out

    def set(self, user: str, entry: str) -> None:
        new = f"{user}:{entry}"
        for i, line in enumerate(self.lines):
            if line.partition(":")[0] == user:
                self.lines[i] = new
                return
        self.lines.append(new)

    def remove(self, user: str) -> bool:
        before = len(self.lines)
        self.lines = [ln for ln in self.lines if ln.partition(":")[0] != user]
        return len(self.lines) != before

    def text(self) -> str:
        return "".join(f"{ln}\n" for ln in self.lines)


# -- files -----------------------------------------------------------------------------------


def _mosquitto_gid() -> int | None:
    try:
        return grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return None


def write_atomic(path: Path, text: str, *, like: Path | None = None, mode: int = 0o640,
                 gid: int | None = None) -> bool:
    """Make ``path`` hold ``text``: a temporary file beside it, fsync, rename, fsync the folder.

    Mode and owner: the old file's; for a new file those of ``like`` when it exists, else
    ``mode`` and ``gid``. Returns False when the file already held ``text`` (nothing written).
    """
    try:
        old = path.stat()
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        old = None
    if old is None and like is not None:
        with contextlib.suppress(FileNotFoundError):
            old = like.stat()
    want_mode = (old.st_mode & 0o7777) if old is not None else mode
    uid = old.st_uid if old is not None else -1
    want_gid = old.st_gid if old is not None else (gid if gid is not None else -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            if (uid, want_gid) != (-1, -1) and (uid, want_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(out.fileno(), uid, want_gid)
            os.fchmod(out.fileno(), want_mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


@contextlib.contextmanager
def locked(accounts_file: Path) -> Iterator[None]:
    """One ``devices`` run at a time on these files: a lock on the accounts file's folder
    (opening a folder to read changes nothing, and leaves no lock file behind)."""
    accounts_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(accounts_file.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AccountsError(f"another `garden-gateway devices` is changing {accounts_file}; "
                                "try again when it is done") from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Files:
    """Where the four files are (under ``root`` for install.sh --root)."""

    accounts: Path
    passwd: Path
    acl: Path
    enforce: Path

    @classmethod
    def of(cls, broker: BrokerConfig, root: Path | None = None) -> Files:
        def at(p: Path) -> Path:
            return root / p.relative_to(p.anchor) if root is not None else p
        return cls(at(broker.accounts_file), at(broker.password_file), at(broker.acl_file),
                   at(broker.enforce_file))


def save(files: Files, accounts: Accounts, passwd: PasswordFile | None = None) -> list[str]:
    """Write what changed, password file first: an account whose entry is written but whose
    rights are not yet can log in and do nothing. Returns the paths written."""
    written: list[str] = []
    if passwd is not None and write_atomic(files.passwd, passwd.text(), gid=_mosquitto_gid()):
        written.append(str(files.passwd))
    if write_atomic(files.accounts, accounts.render_yaml(), mode=0o640):
        written.append(str(files.accounts))
    if write_atomic(files.acl, accounts.render_acl(), like=files.passwd,
                    gid=_mosquitto_gid()):
        written.append(str(files.acl))
    return written


def enforce_text(acl_file: Path) -> str:
    return ("# Garden Gateway: while this file is here, the park broker enforces its ACL.\n"
            "# install.sh puts it here on a fresh install, `garden-gateway devices enforce` "
            "after the\n# migration at a running park; remove it and reload Mosquitto to stop "
            "enforcing.\n"
            f"acl_file {acl_file}\n")


def reload_broker(broker: BrokerConfig) -> str:
    """Tell Mosquitto to re-read its password and ACL files; what was done."""
    if broker.reload == "none":
        return "not reloaded (broker.reload: none): reload Mosquitto yourself"
    if broker.reload == "pid_file":
        try:
            pid = int(broker.pid_file.read_text(encoding="ascii").strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise ReloadError(f"cannot signal the broker from {broker.pid_file}: {exc}; "
                              "reload Mosquitto yourself") from exc
        return f"SIGHUP sent to Mosquitto (pid {pid})"
    argv = ["systemctl", "reload", broker.service]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReloadError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise ReloadError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return f"`{' '.join(argv)}` done"


# -- what the gateway has heard --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    id: str
    site: str
    kind: str | None
    origin: str


def heard_devices(data_dir: Path) -> list[Heard] | None:
    """Devices the gateway has heard (the state registry), or None when there is no registry."""
    path = data_dir / "state.sqlite3"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        rows = db.execute("SELECT id, site, kind, origin FROM devices "
                          "WHERE last_seen_ns IS NOT NULL AND origin != 'gateway' "
                          "ORDER BY id").fetchall()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return [Heard(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]


def refused_publishers(cfg: Config, accounts: Accounts,
                       heard: Sequence[Heard] | None) -> list[str]:
    """Each publisher the ACL made from ``accounts`` would refuse, in words."""
    problems: list[str] = []
    wifi_kind = cfg.wifi.kind
    # Read on the gateway's own ports, never through the broker.
    wired = {slave.device for bus in cfg.modbus for slave in bus.slaves}
    wired |= {str(s.options["device"]) for s in cfg.serial if "device" in s.options}
    for device in heard or ():
        if device.id in wired:
            continue
        account = accounts.accounts.get(device.id)
        if account is None:
            problems.append(f"device {device.id} (heard, {device.origin}) has no account: "
                            f"`garden-gateway devices add {device.id} --kind ...`")
            continue
        if account.kind == "native" and account.site != device.site:
            problems.append(f"device {device.id} publishes for site {device.site}, its native "
                            f"account allows site {account.site}")
        if account.kind == "collectd" and device.kind not in (None, wifi_kind):
            problems.append(f"device {device.id} is a {device.kind}, its account is collectd "
                            "(access points): is the kind right?")
    for sub in cfg.subscriptions:
        if sub.format in FORMAT_KIND:
            continue
        if not any(filter_covers(t, sub.topic) or filters_overlap(t, sub.topic)
                   for a in accounts.devices() for t in a.own_topics()):
            problems.append(f"subscription {sub.source} ({sub.topic}, {sub.format}): no account "
                            f"may publish there: `garden-gateway devices add NAME --kind topics "
                            f"--topic '{sub.topic}'`")
    return problems


def guess_kind(account_id: str, cfg: Config, heard: Sequence[Heard] | None) -> Kind | None:
    """The kind an imported user most likely is, or None when nothing says."""
    if account_id == gateway_account(cfg):
        return "gateway"
    kinds = {FORMAT_KIND[s.format] for s in cfg.subscriptions if s.format in FORMAT_KIND}
    measured = {d.id: d.kind for d in heard or ()}
    measured.update({d.id: d.kind for d in cfg.devices if d.kind})
    collectd_measurements = {str(s.options.get("measurement", cfg.wifi.kind))
                             for s in cfg.subscriptions if s.format == "collectd"}
    if account_id in measured and measured[account_id] in collectd_measurements:
        return "collectd"
    if len(kinds) == 1 and (account_id in measured):
        return next(iter(kinds))
    return None


def gateway_account(cfg: Config) -> str:
    return cfg.mqtt.username or GATEWAY_ACCOUNT


def reserved_for(cfg: Config, accounts: Accounts) -> set[str]:
    """The config's and the accounts' own names no device may take."""
    names = {gateway_account(cfg), cfg.gateway.id}
    for sub in cfg.subscriptions:
        first = sub.topic.split("/")[0]
        if first not in ("+", "#"):
            names.add(first)
    for account in accounts.accounts.values():
        if account.kind == "gateway":
            names.add(account.id)
        names.update(t.split("/")[0] for t in account.topics)
    return names


# -- the commands ----------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[Config, Files] | None:
    loaded: LoadedConfig | None = load_config_or_report(args.config)
    if loaded is None:
        return None
    cfg = loaded.config
    root: Path | None = getattr(args, "root", None)
    return cfg, Files.of(cfg.broker, root)


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to use and whether it was made here (then it is printed)."""
    if args.password_file is not None:
        try:
            text = args.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise AccountsError(f"{args.password_file}: cannot read: {exc.strerror}") from exc
        return check_password(text.splitlines()[0] if text else ""), False
    if args.password_stdin:
        return check_password(sys.stdin.readline()), False
    return new_password(), True


def _finish(cfg: Config, files: Files, written: list[str], *, reload: bool) -> int:
    for path in written:
        print(f"written   {path}")
    if not written:
        print("unchanged (the files already say this)")
        return EXIT_OK
    if not reload:
        return EXIT_OK
    try:
        print(reload_broker(cfg.broker))
    except ReloadError as exc:
        print(f"devices: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not files.enforce.exists():
        print(f"note: the ACL is not enforced yet ({files.enforce} is absent): "
              "`garden-gateway devices enforce` turns it on")
    return EXIT_OK


def cmd_add(args: argparse.Namespace, cfg: Config, files: Files) -> int:
    with locked(files.accounts):
        accounts = load_accounts(files.accounts)
        if args.id in accounts.accounts and not args.replace:
            raise AccountsError(f"{args.id!r} already has an account "
                                f"({accounts.accounts[args.id].kind}); --replace gives it a new "
                                "kind, topics and password")
        others = Accounts({k: a for k, a in accounts.accounts.items() if k != args.id})
        check_id(args.id, reserved=reserved_for(cfg, others))
        topics = tuple(dict.fromkeys(args.topic))
        for t in topics:
            check_topic(t)
        if args.kind == "topics" and not topics:
            raise AccountsError("--kind topics needs at least one --topic")
        site = None
        if args.kind == "native":
            configured = next((d for d in cfg.devices if d.id == args.id), None)
            site = args.site or (configured.site if configured else None) or cfg.gateway.site
        account = Account(args.id, args.kind, site, topics)
        why = accounts.conflicts(account)
        if why is not None:
            raise AccountsError(f"{args.id!r} refused: {why}")
        password, made = _read_password(args)
        passwd = PasswordFile.read(files.passwd)
        passwd.set(args.id, hash_password(password))
        accounts.accounts[args.id] = account
        written = save(files, accounts, passwd)
    if made:
        print(f"password for {args.id}: {password}")
        print("  put it into the device now: it is shown only this once (only its hash is "
              "kept)")
    print(f"account   {args.id} ({args.kind}) may publish on: "
          f"{', '.join(account.own_topics())}")
    return _finish(cfg, files, written, reload=not args.no_reload)


def cmd_remove(args: argparse.Namespace, cfg: Config, files: Files) -> int:
    with locked(files.accounts):
        accounts = load_accounts(files.accounts)
        passwd = PasswordFile.read(files.passwd)
        account = accounts.accounts.get(args.id)
        if account is None and args.id not in passwd.users():
            raise AccountsError(f"{args.id!r} has no account (`garden-gateway devices list`)")
        if account is not None and account.kind == "gateway":
            raise AccountsError(f"{args.id!r} is the gateway's own account: it stays")
        accounts.accounts.pop(args.id, None)
        passwd.remove(args.id)
        written = save(files, accounts, passwd)
    print(f"removed   {args.id}: it can no longer log in to the broker")
    return _finish(cfg, files, written, reload=not args.no_reload)


def cmd_list(args: argparse.Namespace, cfg: Config, files: Files) -> int:
    accounts = load_accounts(files.accounts)
    users = PasswordFile.read(files.passwd).users()
    configured = {d.id for d in cfg.devices}
    rows: list[tuple[str, str, str, str]] = []
    for a in accounts.accounts.values():
        notes = []
        if a.id not in users:
            notes.append("no password")
        if a.kind not in ("gateway", "topics") and a.id not in configured:
            notes.append("not in the config's devices")
        rows.append((a.id, a.kind, " ".join(a.own_topics()), ", ".join(notes)))
    for user in users:
        if user not in accounts.accounts:
            rows.append((user, "-", "-", "password only: no account (`devices import`)"))
    if not rows:
        print(f"no accounts in {files.accounts}")
        return EXIT_OK
    width = max(len(r[0]) for r in rows)
    for r in rows:
        line = f"{r[0]:<{width}}  {r[1]:<8}  {r[2]}"
        print(line + (f"  ({r[3]})" if r[3] else ""))
    enforced = "enforced" if files.enforce.exists() else "NOT enforced (`devices enforce`)"
    print(f"{len(accounts.accounts)} accounts; ACL {files.acl}: {enforced}")
    return EXIT_OK


def _kind_map(items: Sequence[str]) -> tuple[Kind | None, dict[str, Kind]]:
    default: Kind | None = None
    per: dict[str, Kind] = {}
    for item in items:
        name, sep, kind = item.rpartition("=")
        if kind not in DEVICE_KINDS or kind == "topics":
            raise AccountsError(f"--kind {item!r}: KIND or ID=KIND, KIND one of "
                                "native, tasmota, esphome, collectd")
        if sep:
            per[name] = kind
        else:
            default = kind
    return default, per


def cmd_import(args: argparse.Namespace, cfg: Config, files: Files) -> int:
    default, per = _kind_map(args.kind)
    heard = heard_devices(cfg.data_dir)
    source = args.from_file or files.passwd
    with locked(files.accounts):
        accounts = load_accounts(files.accounts)
        users = PasswordFile.read(source).users()
        if not users:
            raise AccountsError(f"{source}: no users to import")
        passwd = PasswordFile.read(files.passwd)
        skipped = 0
        for user, entry in users.items():
            if user in accounts.accounts:
                print(f"kept      {user} ({accounts.accounts[user].kind}: already an account)")
                continue
            if user != gateway_account(cfg):
                try:
                    check_id(user, reserved=reserved_for(cfg, accounts))
                except AccountsError as exc:
                    print(f"skipped   {user}: {exc}")
                    skipped += 1
                    continue
            kind = per.get(user) or guess_kind(user, cfg, heard) or default
            if kind is None:
                print(f"skipped   {user}: its kind is not known; --kind {user}=KIND")
                skipped += 1
                continue
            try:
                site = cfg.gateway.site if kind == "native" else None
                account = Account(user, kind, site)
                why = accounts.conflicts(account)
                if why is not None:
                    raise AccountsError(why)
            except AccountsError as exc:
                print(f"skipped   {user}: {exc}")
                skipped += 1
                continue
            accounts.accounts[user] = account
            passwd.set(user, entry)  # the same hash: the device keeps its password
            print(f"imported  {user} ({kind})")
        written = save(files, accounts, passwd)
    code = _finish(cfg, files, written, reload=not args.no_reload and files.enforce.exists())
    if skipped:
        print(f"{skipped} users not imported: run again with --kind ID=KIND for each")
        return EXIT_FAILED
    return code


def cmd_sync(args: argparse.Namespace, cfg: Config, files: Files) -> int:
    with locked(files.accounts):
        accounts = load_accounts(files.accounts)
        account = gateway_account(cfg)
        if account not in accounts.accounts:
            accounts.accounts = {account: Account(account, "gateway"), **accounts.accounts}
        written = save(files, accounts)
    return _finish(cfg, files, written, reload=not args.no_reload and files.enforce.exists())


def cmd_enforce(args: argparse.Namespace, cfg: Config, files: Files) -> int:
    accounts = load_accounts(files.accounts)
    if gateway_account(cfg) not in accounts.accounts:
        raise AccountsError(f"the gateway's own account {gateway_account(cfg)!r} is not in "
                            f"{files.accounts}: `garden-gateway devices sync` first")
    problems = refused_publishers(cfg, accounts, heard_devices(cfg.data_dir))
    for problem in problems:
        print(f"would refuse: {problem}")
    if problems and not args.force:
        print(f"devices: not enforced: {len(problems)} publishers would be refused; give them "
              "accounts (`devices add`, `devices import`), or --force", file=sys.stderr)
        return EXIT_FAILED
    with locked(files.accounts):
        written = save(files, accounts)
        if write_atomic(files.enforce, enforce_text(cfg.broker.acl_file), mode=0o644):
            written.append(str(files.enforce))
    return _finish(cfg, files, written, reload=not args.no_reload)


COMMANDS = {"add": cmd_add, "remove": cmd_remove, "list": cmd_list, "import": cmd_import,
            "sync": cmd_sync, "enforce": cmd_enforce}


def cmd_devices(args: argparse.Namespace) -> int:
    found = _load(args)
    if found is None:
        return EXIT_USAGE
    cfg, files = found
    try:
        code: int = COMMANDS[args.devices_command](args, cfg, files)
    except AccountsError as exc:
        print(f"devices {args.devices_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as exc:
        print(f"devices {args.devices_command}: {exc}: run it with sudo", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"devices {args.devices_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``devices`` to ``garden-gateway``'s subcommands."""
    parser = sub.add_parser(
        "devices", help="the park broker's accounts: one per device, and the ACL that lets "
        "each publish only on its own topics",
        description="Manage the park broker's accounts (one per device) and the Mosquitto ACL "
        "made from them. Files: the config's broker section. Exit 0 done, 1 failed (files or "
        "reload), 2 bad input (a reserved id, a topic of another device, ...).")
    commands = parser.add_subparsers(dest="devices_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"YAML config file (default {DEFAULT_CONFIG})")
    reload = argparse.ArgumentParser(add_help=False)
    reload.add_argument("--no-reload", action="store_true",
                        help="write the files but do not tell Mosquitto to reload")
    add = commands.add_parser(
        "add", parents=[common, reload], help="make a device's account and password",
        description="Make a device's broker account: a random password (printed once), its "
        "password-file entry and its ACL block; then Mosquitto reloads.")
    add.add_argument("id", metavar="ID",
                     help="the device id, which is also its broker user name")
    add.add_argument("--kind", required=True, choices=DEVICE_KINDS,
                     help="native: garden/<site>/<id>/#; tasmota: tele/<id>/# and stat/<id>/#; "
                     "esphome: <id>/#; collectd: collectd/<id>/#; topics: only --topic")
    add.add_argument("--topic", action="append", default=[], metavar="FILTER",
                     help="an extra topic filter it may publish on, e.g. 'telegraf/#' "
                     "(repeatable; the only ones for --kind topics)")
    add.add_argument("--site", help="native: the site in its topics (default: the device's "
                     "site in the config, else gateway.site)")
    given = add.add_mutually_exclusive_group()
    given.add_argument("--password-file", type=Path,
                       help="use the password on this file's first line instead of a new one")
    given.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input's first line")
    add.add_argument("--replace", action="store_true",
                     help="the account exists: give it this kind, these topics and a new "
                     "password")
    add.set_defaults(func=cmd_devices)
    remove = commands.add_parser(
        "remove", parents=[common, reload], help="delete a device's account",
        description="Delete a device's account: its password entry and its ACL block; then "
        "Mosquitto reloads and refuses its next login.")
    remove.add_argument("id", metavar="ID", help="the device id (broker user name)")
    remove.set_defaults(func=cmd_devices)
    lst = commands.add_parser("list", parents=[common], help="the accounts and their topics",
                              description="Each account, its kind and the topics it may "
                              "publish on; users with a password but no account.")
    lst.set_defaults(func=cmd_devices)
    imp = commands.add_parser(
        "import", parents=[common, reload], help="make accounts of an existing password "
        "file's users (the migration at a running park)",
        description="Make an account for each user of the password file (or --from) "
        "that has none, keeping its password hash. The kind is guessed from the config and the "
        "devices the gateway has heard, or given with --kind. Nothing is enforced.")
    imp.add_argument("--kind", action="append", default=[], metavar="[ID=]KIND",
                     help="KIND for every user whose kind is not known, or ID=KIND for one "
                     "(repeatable)")
    imp.add_argument("--from", dest="from_file", type=Path, metavar="PASSWD",
                     help="import the users of this Mosquitto password file (default: "
                     "broker.password_file)")
    imp.set_defaults(func=cmd_devices)
    sync = commands.add_parser(
        "sync", parents=[common, reload], help="rewrite the ACL file from the accounts file",
        description="Rewrite the ACL file from the accounts file (adding the gateway's own "
        "account when it is missing); install.sh runs it.")
    sync.add_argument("--root", type=Path,
                      help="the broker files are under this folder (install.sh --root)")
    sync.set_defaults(func=cmd_devices)
    enforce = commands.add_parser(
        "enforce", parents=[common, reload], help="turn the ACL on (after `doctor` lists no "
        "publisher it would refuse)",
        description="Write broker.enforce_file (acl_file ...) and reload Mosquitto: from then "
        "on each account may publish only on its own topics. Refused while a device the "
        "gateway has heard has no account, unless --force.")
    enforce.add_argument("--force", action="store_true",
                         help="enforce even though some publishers would be refused")
    enforce.set_defaults(func=cmd_devices)


__all__ = [
    "ACL_HEADER",
    "DEVICE_KINDS",
    "GATEWAY_OWNED",
    "GATEWAY_WRITES",
    "KINDS",
    "RESERVED_IDS",
    "Account",
    "Accounts",
    "AccountsError",
    "Files",
    "Heard",
    "PasswordFile",
    "ReloadError",
    "check_id",
    "check_topic",
    "filter_covers",
    "filters_overlap",
    "hash_password",
    "heard_devices",
    "load_accounts",
    "may_publish",
    "refused_publishers",
    "register",
    "reload_broker",
    "save",
    "verify_password",
    "write_atomic",
]
