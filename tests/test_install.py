"""systemd/install.sh and uninstall.sh, run for real into scratch roots.

What is real: the script itself, `useradd/groupadd/usermod/userdel --root` on a synthetic
/etc/passwd, group, shadow and gshadow, `systemctl --root` (offline: it only makes the
[Install] symlinks), `python3 -m venv` and a real `pip install --editable` of the gateway with
its dependencies from the configured package index, `mosquitto_passwd`, a real Mosquitto started
with the installed drop-in (only its listener moved to 127.0.0.1 on a free port and its password
file path prefixed with the scratch root) that the installed gateway logs in to with the
installed password, and the installed gateway run from its venv with the installed config and
secrets. What is skipped: apt-get, and everything that talks to a running systemd, udev,
journald or Mosquitto (the script does these only when the root is /); shims on PATH record any
such call and the first install asserts there were none. The scratch root is not a chroot: the
venv's scripts name $ROOT/opt/..., which is where the tests run them.

The upgrade (DESIGN.md, "Upgrades"): the previous release, exported from this repository with
`git archive`, is installed by its own install.sh and run once so that it leaves config, spool,
state and history; then this checkout is installed over it and the unit's command runs on what
was kept.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import re
import shlex
import shutil
import sqlite3
import ssl
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.testing.stack import PrivateMosquitto, find_executable, free_port
from tests.conftest import ROOT, serving, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root and chown need root"),
    pytest.mark.skipif(shutil.which("systemctl") is None, reason="needs systemctl (--root)"),
]

NAME = "garden-gateway"
# What the checkout gives the script; frozen into a copy per session, because other work in
# this checkout changes files while the tests run.
CHECKOUT_ITEMS = ("gateway", "devices", "dashboard", "config", "systemd", "docs",
                  "pyproject.toml", "README.md", "CHANGELOG.md")
PREVIOUS_RELEASE_ITEMS = ("gateway", "devices", "dashboard", "config", "systemd",
                          "pyproject.toml", "README.md")
# Tools that act on the running system: with --root the script must never call them.
LIVE_TOOLS = ("apt-get", "apt", "dpkg-query", "udevadm", "service", "invoke-rc.d", "journalctl")
SCRIPT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Installed:
    root: Path
    checkout: Path
    output: str
    seconds: float
    live_calls: Path


def _run(args: list[str], *, env: dict[str, str] | None = None,
         timeout: float = SCRIPT_TIMEOUT_S, cwd: Path | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env if env is not None else _script_env(), cwd=cwd)


def _script_env(path_prefix: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_GATEWAY_")}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env.get('PATH', '/usr/bin:/bin')}"
    # Nothing the tests run may leave caches in the trees they compare.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _install(root: Path, checkout: Path, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = _run([str(checkout / "systemd" / "install.sh"), "--root", str(root), *args], env=env)
    return result


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _host_ids(kind: str, name: str, fallback: int) -> int:
    try:
        return pwd.getpwnam(name).pw_uid if kind == "uid" else grp.getgrnam(name).gr_gid
    except KeyError:
        return fallback


def make_scratch_root(parent: Path, *, with_mosquitto: bool = True) -> Path:
    """A root as Debian leaves it after `apt install mosquitto`: only the account files.

    The mosquitto user and group get the host's numbers, so the host's Mosquitto (which drops
    to its own user) can read a password file made for the scratch root's group.
    """
    root = Path(tempfile.mkdtemp(prefix="gg-root-", dir=parent))
    root.chmod(0o755)  # the broker, running as user mosquitto, walks into it
    etc = root / "etc"
    etc.mkdir(mode=0o755)
    m_uid, m_gid = _host_ids("uid", "mosquitto", 103), _host_ids("gid", "mosquitto", 106)
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    group = ["root:x:0:", "dialout:x:20:"]
    shadow = ["root:*:19000:0:99999:7:::"]
    gshadow = ["root:*::", "dialout:*::"]
    if with_mosquitto:
        passwd.append(f"mosquitto:x:{m_uid}:{m_gid}::/var/lib/mosquitto:/usr/sbin/nologin")
        group.append(f"mosquitto:x:{m_gid}:")
        shadow.append("mosquitto:!:19000::::::")
        gshadow.append("mosquitto:!::")
    for name, lines, mode in (("passwd", passwd, 0o644), ("group", group, 0o644),
                              ("shadow", shadow, 0o640), ("gshadow", gshadow, 0o640)):
        path = etc / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        path.chmod(mode)
    return root


def freeze_checkout(parent: Path) -> Path:
    checkout = parent / "checkout"
    checkout.mkdir()
    for item in CHECKOUT_ITEMS:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, checkout / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, checkout / item)
    return checkout


def make_shims(parent: Path, record: Path) -> Path:
    """PATH shims: live tools record the call and fail; systemctl must carry --root."""
    shims = parent / "shims"
    shims.mkdir()
    for tool in LIVE_TOOLS:
        script = shims / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{record}"\nexit 97\n')
        script.chmod(0o755)
    real = shutil.which("systemctl")
    assert real is not None
    script = shims / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --root="*) ;; *) echo "systemctl $*" >> "' + str(record) + '"; '
        "exit 97 ;; esac\n"
        f'exec {real} "$@"\n')
    script.chmod(0o755)
    return shims


def copy_root(root: Path, parent: Path) -> Path:
    """The same installed tree elsewhere, owners, modes, times and symlinks kept."""
    copy = Path(tempfile.mkdtemp(prefix="gg-copy-", dir=parent))
    copy.chmod(0o755)
    subprocess.run([find_executable("cp"), "-a", f"{root}/.", str(copy)], check=True, timeout=120)
    return copy


def listing(root: Path) -> dict[str, tuple[object, ...]]:
    """Path -> (type and mode, owner, group, size, mtime, content hash or link target)."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                content: str = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = ""
            found[str(path.relative_to(root))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, content)
    return found


def account(root: Path, name: str, file: str = "passwd") -> list[str] | None:
    for line in (root / "etc" / file).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def number(root: Path, name: str, file: str = "passwd") -> int:
    fields = account(root, name, file)
    assert fields is not None, f"{name} not in {root}/etc/{file}"
    return int(fields[2])


def secrets(root: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (root / "etc" / NAME / "secrets.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def changed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("changed", "removed"))]


def mode_owner(path: Path) -> tuple[str, int, int]:
    st = path.lstat()
    return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    # Not pytest's tmp_path: that is under a 0700 folder, and the test broker (which drops to
    # user mosquitto, as on the Pi) must walk to the scratch root's password file.
    path = Path(tempfile.mkdtemp(prefix="gg-install-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def installed(work: Path) -> Installed:
    checkout = freeze_checkout(work)
    root = make_scratch_root(work)
    record = work / "live-calls.log"
    shims = make_shims(work, record)
    started = time.monotonic()
    result = _install(root, checkout, env=_script_env(shims))
    seconds = time.monotonic() - started
    _ok(result)
    return Installed(root, checkout, result.stdout, seconds, record)


def test_first_install_reports_changes_and_calls_nothing_live(installed: Installed) -> None:
    assert not installed.live_calls.exists(), installed.live_calls.read_text()
    assert "install: 0 changed" not in installed.output
    assert re.search(r"^install: \d+ changed, 0 unchanged$", installed.output, re.M), \
        installed.output
    print(f"first install: {installed.seconds:.1f} s")


def test_files_modes_and_owners(installed: Installed) -> None:
    root = installed.root
    gg_uid, gg_gid = number(root, NAME), number(root, NAME, "group")
    m_gid = number(root, "mosquitto", "group")
    expected = {
        "opt/garden-gateway": ("0o755", 0, 0),
        "opt/garden-gateway/gateway/app/gateway.py": ("0o644", 0, 0),
        "opt/garden-gateway/dashboard/index.html": ("0o644", 0, 0),
        "opt/garden-gateway/systemd/install.sh": ("0o755", 0, 0),
        "etc/garden-gateway": ("0o750", 0, gg_gid),
        "etc/garden-gateway/config.yaml": ("0o640", 0, gg_gid),
        "etc/garden-gateway/secrets.env": ("0o640", 0, gg_gid),
        "var/lib/garden-gateway": ("0o750", gg_uid, gg_gid),
        "etc/systemd/system/garden-gateway.service": ("0o644", 0, 0),
        "etc/udev/rules.d/99-garden-gateway-serial.rules": ("0o644", 0, 0),
        "etc/systemd/journald.conf.d/garden-gateway.conf": ("0o644", 0, 0),
        "etc/mosquitto/conf.d/garden.conf": ("0o644", 0, 0),
        "etc/mosquitto/garden.passwd": ("0o640", 0, m_gid),
        "etc/mosquitto/garden.acl": ("0o640", 0, m_gid),
        "etc/mosquitto/conf.d/garden-acl.conf": ("0o644", 0, 0),
        "etc/garden-gateway/broker-accounts.yaml": ("0o640", 0, gg_gid),
    }
    actual = {rel: mode_owner(root / rel) for rel in expected}
    assert actual == expected
    checkout = installed.checkout
    for src, dest in (
        ("systemd/99-garden-gateway-serial.rules",
         "etc/udev/rules.d/99-garden-gateway-serial.rules"),
        ("systemd/journald-garden-gateway.conf",
         "etc/systemd/journald.conf.d/garden-gateway.conf"),
        ("config/mosquitto-garden.conf", "etc/mosquitto/conf.d/garden.conf"),
        ("config/mosquitto-garden-acl.conf", "etc/mosquitto/conf.d/garden-acl.conf"),
        ("config/example.yaml", "etc/garden-gateway/config.yaml"),
    ):
        assert (root / dest).read_bytes() == (checkout / src).read_bytes(), dest
    link = root / "usr/local/bin/garden-gateway"
    assert os.readlink(link) == "/opt/garden-gateway/.venv/bin/garden-gateway"
    assert (root / "opt/garden-gateway/.venv/bin/garden-gateway").is_file()
    # Compiled at install: the sandboxed service cannot write caches into /opt.
    assert list((root / "opt/garden-gateway/gateway/app/__pycache__").glob("gateway.*.pyc"))


def test_service_user_is_a_nologin_system_user_in_dialout(installed: Installed) -> None:
    user = account(installed.root, NAME)
    assert user is not None
    _, _, uid, gid, _, home, shell = user
    assert int(uid) < 1000, "a system user"
    assert (home, shell) == ("/var/lib/garden-gateway", "/usr/sbin/nologin")
    group = account(installed.root, NAME, "group")
    assert group is not None
    assert group[2] == gid
    dialout = account(installed.root, "dialout", "group")
    assert dialout is not None
    assert NAME in dialout[3].split(",")
    shadow = account(installed.root, NAME, "shadow")
    assert shadow is not None
    assert shadow[1] in ("!", "*", "!*"), "no password: nobody logs in"


def test_unit_is_installed_verbatim_and_enabled(installed: Installed) -> None:
    unit = installed.root / "etc/systemd/system/garden-gateway.service"
    assert unit.read_bytes() == (installed.checkout / "systemd/garden-gateway.service").read_bytes()
    wants = installed.root / "etc/systemd/system/multi-user.target.wants/garden-gateway.service"
    assert os.readlink(wants) == "/etc/systemd/system/garden-gateway.service"
    state = _run(["systemctl", f"--root={installed.root}", "is-enabled", f"{NAME}.service"])
    assert state.stdout.strip() == "enabled"


def test_secrets_are_generated_private_and_match_the_broker_account(
    installed: Installed,
) -> None:
    values = secrets(installed.root)
    assert re.fullmatch(r"[0-9a-f]{32}", values["GARDEN_GATEWAY_API__OPERATOR_TOKEN"])
    assert re.fullmatch(r"[0-9a-f]{32}", values["GARDEN_GATEWAY_MQTT__PASSWORD"])
    assert values["GARDEN_GATEWAY_API__OPERATOR_TOKEN"] != values["GARDEN_GATEWAY_MQTT__PASSWORD"]
    passwd = (installed.root / "etc/mosquitto/garden.passwd").read_text()
    # A salted hash (Mosquitto 2's $7$: PBKDF2-SHA512), never the password itself.
    assert re.fullmatch(r"garden-gateway:\$7\$\S+\n", passwd)
    assert values["GARDEN_GATEWAY_MQTT__PASSWORD"] not in passwd
    conf = (installed.root / "etc/mosquitto/conf.d/garden.conf").read_text()
    settings = [line.split(None, 1) for line in conf.splitlines()
                if line.strip() and not line.startswith("#")]
    assert ["allow_anonymous", "false"] in settings
    assert ["password_file", "/etc/mosquitto/garden.passwd"] in settings


JOURNALD_BINARIES = (Path("/lib/systemd/systemd-journald"),
                     Path("/usr/lib/systemd/systemd-journald"))


def test_journald_drop_in_names_only_settings_this_journald_knows(installed: Installed) -> None:
    binary = next((b for b in JOURNALD_BINARIES if b.is_file()), None)
    if binary is None:
        pytest.skip("no systemd-journald binary here to check the setting names against")
    known = binary.read_bytes()  # its gperf table holds every "Journal.<Name>"
    text = (installed.root / "etc/systemd/journald.conf.d/garden-gateway.conf").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "[Journal]"
    names = [line.split("=", 1)[0] for line in lines[1:]]
    assert "SystemMaxUse" in names
    assert "RuntimeMaxUse" in names
    unknown = [n for n in names if b"Journal." + n.encode() + b"\x00" not in known]
    assert unknown == []


def test_installed_gateway_accepts_its_config(installed: Installed) -> None:
    root = installed.root
    result = _run([str(root / "opt/garden-gateway/.venv/bin/garden-gateway"), "check-config",
                   "--config", str(root / "etc/garden-gateway/config.yaml")], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": ok" in result.stdout


class InstalledMosquitto(PrivateMosquitto):
    """A broker on the installed drop-in: only its listener and file paths are moved.

    No `user root`: started as root, Mosquitto drops to user mosquitto before it reads the
    password file, so this also proves the file's owner and mode work.
    """

    def __init__(self, workdir: Path, root: Path) -> None:
        super().__init__(workdir)
        self.root = root

    def _prepare(self) -> list[str]:
        conf = (self.root / "etc/mosquitto/conf.d/garden.conf").read_text()
        assert re.search(r"^listener 1883$", conf, re.M)
        conf = re.sub(r"^listener 1883$", f"listener {self.port} {self.host}", conf, flags=re.M)
        conf = re.sub(r"^password_file /", f"password_file {self.root}/", conf, flags=re.M)
        # The ACL, enforced on a fresh install (conf.d/garden-acl.conf; older releases: none).
        enforce = self.root / "etc/mosquitto/conf.d/garden-acl.conf"
        if enforce.exists():
            conf += re.sub(r"^acl_file /", f"acl_file {self.root}/", enforce.read_text(),
                           flags=re.M)
        self.conf_path.write_text(conf + "log_dest stderr\n", encoding="utf-8")
        return [find_executable("mosquitto"), "-c", str(self.conf_path)]


def _mqtt_connect(port: int, *auth: str) -> subprocess.CompletedProcess[str]:
    return _run([find_executable("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port),
                 *auth, "-t", "install-test", "-m", "x", "-q", "1"], timeout=20)


def exec_start(root: Path) -> list[str]:
    """The installed unit's ExecStart, its absolute paths moved into the scratch root."""
    unit = (root / "etc/systemd/system/garden-gateway.service").read_text()
    [line] = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    return [f"{root}{arg}" if arg.startswith("/") else arg
            for arg in shlex.split(line.removeprefix("ExecStart="))]


@contextlib.contextmanager
def unit_running(root: Path, broker_port: int, data_dir: Path, log_path: Path,
                 **extra_env: str) -> Iterator[str]:
    """The gateway started by the unit's command with its secrets; yields the API's URL once
    /health answers, and stops it with SIGTERM (exit 0) after."""
    api_port = free_port()
    env = {**_script_env(), **secrets(root),
           # As the unit runs it, except what would leave the scratch root or this host.
           "GARDEN_GATEWAY_DATA_DIR": str(data_dir),
           "GARDEN_GATEWAY_MQTT__PORT": str(broker_port),
           "GARDEN_GATEWAY_API__HOST": "127.0.0.1",
           "GARDEN_GATEWAY_API__PORT": str(api_port),
           "GARDEN_GATEWAY_INFLUX__ENABLED": "false",
           **extra_env}
    with serving(exec_start(root), api=f"http://127.0.0.1:{api_port}", log_path=log_path,
                 env=env, cwd=log_path.parent, what=f"/health of the gateway in {root}") as api:
        yield api


def test_installed_gateway_runs_against_the_installed_broker_config(
    installed: Installed, work: Path, tmp_path: Path,
) -> None:
    root = installed.root
    values = secrets(root)
    password = values["GARDEN_GATEWAY_MQTT__PASSWORD"]
    token = values["GARDEN_GATEWAY_API__OPERATOR_TOKEN"]
    with InstalledMosquitto(tmp_path / "broker", root) as broker:
        assert _mqtt_connect(broker.port).returncode != 0, "anonymous refused"
        assert _mqtt_connect(broker.port, "-u", NAME, "-P", "wrong").returncode != 0
        assert _mqtt_connect(broker.port, "-u", NAME, "-P", password).returncode == 0

        https_port = free_port()
        with unit_running(root, broker.port, tmp_path / "data", tmp_path / "gateway.log",
                          GARDEN_GATEWAY_API__TLS__PORT=str(https_port)) as api:
            # The pages come from /opt/garden-gateway/dashboard (the editable install).
            page = httpx.get(f"{api}/", timeout=5)
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]
            assert page.content == (root / "opt/garden-gateway/dashboard/index.html").read_bytes()
            # The installed config has HTTPS on (self-signed): operators only there.
            assert httpx.get(f"{api}/api/v1/status", timeout=5).status_code == 308
            https = f"https://127.0.0.1:{https_port}"
            verify = ssl.create_default_context(
                cafile=str(tmp_path / "data" / "tls" / "gateway.crt"))
            assert httpx.get(f"{https}/api/v1/status", timeout=5,
                             verify=verify).status_code == 401
            status = httpx.get(f"{https}/api/v1/status", timeout=5, verify=verify,
                               headers={"Authorization": f"Bearer {token}"})
            assert status.status_code == 200
            # Logged in to the broker with the installed password: its birth message is there.
            birth = _run([find_executable("mosquitto_sub"), "-h", "127.0.0.1",
                          "-p", str(broker.port), "-u", NAME, "-P", password,
                          "-t", "garden/+/gateway/+/status", "-C", "1", "-W", "20", "-v"],
                         timeout=30)
            assert birth.stdout.strip() == (
                "garden/taman-bukit-pelangi/gateway/gw-taman-bukit-pelangi/status online")


def test_second_run_changes_nothing(installed: Installed) -> None:
    before = listing(installed.root)
    started = time.monotonic()
    output = _ok(_install(installed.root, installed.checkout))
    seconds = time.monotonic() - started
    after = listing(installed.root)
    differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not differing, sorted(differing)[:20]
    assert changed_lines(output) == []
    assert re.search(r"^install: nothing changed \(\d+ unchanged\)$", output, re.M), output
    print(f"second run: {seconds:.2f} s over {len(after)} paths")


def test_rerun_keeps_operator_edits_and_repairs_the_program(
    installed: Installed, work: Path,
) -> None:
    root = copy_root(installed.root, work)
    config = root / "etc/garden-gateway/config.yaml"
    edited_config = config.read_text().replace("port: 8080", "port: 8081")
    config.write_text(edited_config)
    secrets_path = root / "etc/garden-gateway/secrets.env"
    edited_secrets = secrets_path.read_text().replace(
        "GARDEN_GATEWAY_API__OPERATOR_TOKEN=", "GARDEN_GATEWAY_API__OPERATOR_TOKEN=ff")
    secrets_path.write_text(edited_secrets)
    secrets_path.chmod(0o644)  # world-readable: the script takes that back
    passwd = root / "etc/mosquitto/garden.passwd"
    subprocess.run([find_executable("mosquitto_passwd"), "-b", str(passwd), "ap-gerbang", "pw"],
                   check=True, timeout=30)
    passwd_text = passwd.read_text()
    (root / "opt/garden-gateway/gateway/app/gateway.py").write_text("# damaged\n")
    (root / "opt/garden-gateway/gateway/app/stale_module.py").write_text("# from an old version\n")
    (root / "etc/systemd/system/multi-user.target.wants/garden-gateway.service").unlink()
    checkout = installed.checkout

    output = _ok(_install(root, checkout))

    assert config.read_text() == edited_config
    assert secrets_path.read_text() == edited_secrets
    assert mode_owner(secrets_path)[0] == "0o640"
    assert passwd.read_text() == passwd_text, "the device's account is kept"
    assert (root / "opt/garden-gateway/gateway/app/gateway.py").read_bytes() == \
        (checkout / "gateway/app/gateway.py").read_bytes()
    assert not (root / "opt/garden-gateway/gateway/app/stale_module.py").exists()
    changed = [line.split(None, 1)[1] for line in changed_lines(output)]
    assert changed == [
        f"{root}/opt/garden-gateway/gateway (1 written, 1 removed)",
        f"{root}/etc/garden-gateway/secrets.env (kept; added: nothing; mode 0640 root:{NAME})",
        f"{NAME}.service enabled (in {root})",
    ], output


def test_a_park_whose_devices_had_accounts_is_not_enforced_until_it_migrates(
    installed: Installed, work: Path,
) -> None:
    """An update at a park whose devices already log in: the ACL is written but not enforced
    (that is `garden-gateway devices enforce`, after `devices import` and `doctor`)."""
    root = copy_root(installed.root, work)
    (root / "etc/mosquitto/conf.d/garden-acl.conf").unlink()
    passwd = root / "etc/mosquitto/garden.passwd"
    subprocess.run([find_executable("mosquitto_passwd"), "-b", str(passwd), "ap-gerbang",
                    "pw-ap-gerbang"], check=True, timeout=30)

    output = _ok(_install(root, installed.checkout))

    assert not (root / "etc/mosquitto/conf.d/garden-acl.conf").exists()
    assert re.search(r"^skipped +\S+/garden-acl\.conf \(devices have accounts from before: "
                     r".*devices import", output, re.M), output
    acl = (root / "etc/mosquitto/garden.acl").read_text()
    assert "user garden-gateway\ntopic read #\n" in acl
    assert "ap-gerbang" not in acl
    assert "ap-gerbang:" in passwd.read_text(), "its account is kept for the migration"


def test_rerun_replaces_a_file_where_a_folder_belongs_and_the_reverse(
    installed: Installed, work: Path,
) -> None:
    # What an upgrade meets when a module becomes a package of the same name, or back.
    root = copy_root(installed.root, work)
    opt = root / "opt/garden-gateway"
    shutil.rmtree(opt / "dashboard/static")
    (opt / "dashboard/static").write_text("a file where the folder was\n")
    (opt / "gateway/app/gateway.py").unlink()
    (opt / "gateway/app/gateway.py").mkdir()
    (opt / "gateway/app/gateway.py/stray.py").write_text("# in the way\n")

    _ok(_install(root, installed.checkout))

    for tree in ("dashboard", "gateway"):
        assert tree_files(opt / tree) == tree_files(installed.checkout / tree), tree
    assert (opt / "dashboard/static/resident.js").read_bytes() == \
        (installed.checkout / "dashboard/static/resident.js").read_bytes()
    assert (opt / "gateway/app/gateway.py").read_bytes() == \
        (installed.checkout / "gateway/app/gateway.py").read_bytes()
    assert changed_lines(_ok(_install(root, installed.checkout))) == [], "and it stays so"


PROGRAM = ("opt/garden-gateway", "usr/local/bin/garden-gateway",
           "etc/systemd/system/garden-gateway.service",
           "etc/systemd/system/multi-user.target.wants/garden-gateway.service",
           "etc/udev/rules.d/99-garden-gateway-serial.rules",
           "etc/systemd/journald.conf.d/garden-gateway.conf",
           "etc/mosquitto/conf.d/garden.conf")
KEPT = ("etc/garden-gateway/config.yaml", "etc/garden-gateway/secrets.env",
        "var/lib/garden-gateway/spool.sqlite3", "etc/mosquitto/garden.passwd")


def _with_spool(root: Path) -> None:
    spool = root / "var/lib/garden-gateway/spool.sqlite3"
    spool.write_bytes(b"unsent readings")


def test_uninstall_keeps_data_config_and_user(installed: Installed, work: Path) -> None:
    root = copy_root(installed.root, work)
    _with_spool(root)
    kept_before = {rel: (root / rel).read_bytes() for rel in KEPT}

    output = _ok(_run([str(installed.checkout / "systemd/uninstall.sh"), "--root", str(root)]))

    assert [rel for rel in PROGRAM if os.path.lexists(root / rel)] == []
    assert {rel: (root / rel).read_bytes() for rel in KEPT} == kept_before
    assert account(root, NAME) is not None
    assert "uninstall --purge --yes" in output
    again = _ok(_run([str(installed.checkout / "systemd/uninstall.sh"), "--root", str(root)]))
    assert changed_lines(again) == [], "a second uninstall finds nothing to remove"

    # Installing again finds the kept secrets and uses them: the devices' passwords still work.
    token = secrets(root)["GARDEN_GATEWAY_API__OPERATOR_TOKEN"]
    _ok(_install(root, installed.checkout))
    assert secrets(root)["GARDEN_GATEWAY_API__OPERATOR_TOKEN"] == token
    assert (root / "var/lib/garden-gateway/spool.sqlite3").read_bytes() == b"unsent readings"


def test_purge_without_yes_is_refused_and_touches_nothing(
    installed: Installed, work: Path,
) -> None:
    root = copy_root(installed.root, work)
    before = listing(root)
    result = _run([str(installed.checkout / "systemd/uninstall.sh"), "--root", str(root),
                   "--purge"])
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert "spool" in result.stderr
    assert listing(root) == before


def test_purge_yes_removes_data_config_and_user(installed: Installed, work: Path) -> None:
    root = copy_root(installed.root, work)
    _with_spool(root)
    _ok(_run([str(installed.checkout / "systemd/install.sh"), "uninstall", "--root", str(root),
              "--purge", "--yes"]))
    for rel in (*PROGRAM, *KEPT, "etc/garden-gateway", "var/lib/garden-gateway"):
        assert not os.path.lexists(root / rel), rel
    for file in ("passwd", "group", "shadow", "gshadow"):
        assert NAME not in (root / "etc" / file).read_text(), file
    assert account(root, "mosquitto") is not None, "other accounts stay"


def test_unknown_option_is_a_usage_error(installed: Installed, work: Path) -> None:
    root = make_scratch_root(work)
    before = listing(root)
    result = _install(root, installed.checkout, "--frobnicate")
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr
    assert listing(root) == before


def test_refuses_a_root_without_mosquitto_and_writes_nothing(
    installed: Installed, work: Path,
) -> None:
    root = make_scratch_root(work, with_mosquitto=False)
    before = listing(root)
    result = _install(root, installed.checkout)
    assert result.returncode == 1
    assert "is the Debian package mosquitto installed?" in result.stderr
    assert listing(root) == before


def test_refuses_to_install_on_this_system_when_not_root(
    installed: Installed, work: Path,
) -> None:
    # As nobody, without --root: the real system. The script must stop before anything.
    public = Path(tempfile.mkdtemp(prefix="gg-script-", dir=work))
    public.chmod(0o755)
    script = public / "install.sh"
    shutil.copy2(installed.checkout / "systemd/install.sh", script)
    result = _run([find_executable("setpriv"), "--reuid=65534", "--regid=65534",
                   "--clear-groups", "--", str(script), "--no-apt", "--no-start"])
    assert result.returncode == 1
    assert "must run as root to install on this system" in result.stderr


# The previous release: the flat layout (gateway/app.py, gateway/cli.py, ...) that parks run.
PREVIOUS_RELEASE = "eb4eff8"
TREES = ("gateway", "devices", "dashboard", "config", "systemd")
# A device the previous release discovers and keeps: in its spool, its registry, its history.
KEPT_DEVICE = "kebun-9"
KEPT_VALUES = (27.5, 28.0, 28.5)


def export_release(commit: str, parent: Path) -> Path:
    """``commit``'s files as a checkout of their own, from the repository ROOT is in."""
    git = find_executable("git")
    top = _run([git, "-C", str(ROOT), "rev-parse", "--show-toplevel"], timeout=30)
    if top.returncode != 0:
        pytest.fail(f"{ROOT} is not in a git repository ({top.stderr.strip()}): the upgrade "
                    f"test exports the previous release {commit} from it; it needs a full clone")
    repo = top.stdout.strip()
    if _run([git, "-C", repo, "cat-file", "-e", f"{commit}^{{commit}}"], timeout=30).returncode:
        pytest.fail(f"the previous release {commit} is not in {repo}: the upgrade test needs "
                    "a full clone (git fetch --unshallow)")
    archive = parent / f"release-{commit}.tar"
    # What that release shipped (docs/ and CHANGELOG.md came later).
    _ok(_run([git, "-C", repo, "archive", "--format=tar", "-o", str(archive), commit, "--",
              *PREVIOUS_RELEASE_ITEMS], timeout=60))
    checkout = parent / f"release-{commit}"
    with tarfile.open(archive) as tar:
        tar.extractall(checkout, filter="tar")
    return checkout


def tree_files(folder: Path) -> set[str]:
    """Files under ``folder``, compiled caches left out."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if not p.is_dir() and "__pycache__" not in p.parts}


def digests(folder: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest()
            for rel in tree_files(folder)}


def count(database: Path, query: str, *args: object) -> int:
    # Read-only: the gateway may still have it open (WAL lets a reader in).
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        found: int = db.execute(query, args).fetchone()[0]
    return found


def test_upgrade_from_the_previous_release_keeps_config_and_data_and_the_unit_works(
    installed: Installed, work: Path,
) -> None:
    upgrade = Path(tempfile.mkdtemp(prefix="gg-upgrade-", dir=work))
    upgrade.chmod(0o755)
    previous = export_release(PREVIOUS_RELEASE, upgrade)
    root = make_scratch_root(upgrade)
    record = upgrade / "live-calls.log"
    env = _script_env(make_shims(upgrade, record))
    _ok(_run([str(previous / "systemd/install.sh"), "--root", str(root)], env=env))
    opt = root / "opt/garden-gateway"
    assert (opt / "gateway/app.py").is_file(), "the previous release has the flat layout"

    # The previous release runs once, as its unit would, and keeps what a park keeps.
    data = root / "var/lib/garden-gateway"
    values = secrets(root)
    password = values["GARDEN_GATEWAY_MQTT__PASSWORD"]
    operator = {"Authorization": f"Bearer {values['GARDEN_GATEWAY_API__OPERATOR_TOKEN']}"}
    no_ntp = {"GARDEN_GATEWAY_CLOCK__REQUIRE_SYNC": "no"}  # this machine's clock never syncs
    spool = data / "spool.sqlite3"
    mine = f"%device={KEPT_DEVICE}%temperature_c=%"  # its readings, not its device_status
    with InstalledMosquitto(upgrade / "broker-previous", root) as broker, \
            unit_running(root, broker.port, data, upgrade / "previous.log", **no_ntp):
        for value in KEPT_VALUES:
            _ok(_run([find_executable("mosquitto_pub"), "-h", "127.0.0.1",
                      "-p", str(broker.port), "-u", NAME, "-P", password, "-q", "1",
                      "-t", f"garden/taman-bukit-pelangi/{KEPT_DEVICE}/telemetry",
                      "-m", f'{{"temperature_c": {value}}}'], timeout=20))
        wait_for(lambda: spool.exists() and count(
            spool, "SELECT count(*) FROM spool WHERE line LIKE ?", mine) >= len(KEPT_VALUES),
            what="the previous release's spool to hold the readings")
    spool_rows = count(spool, "SELECT count(*) FROM spool")
    assert count(spool, "SELECT count(*) FROM spool WHERE line LIKE ?", mine) == len(KEPT_VALUES)
    assert count(data / "state.sqlite3", "SELECT count(*) FROM devices WHERE id = ?",
                 KEPT_DEVICE) == 1
    assert count(data / "history.sqlite3", "SELECT count(*) FROM rollup WHERE device = ?",
                 KEPT_DEVICE) >= 1
    kept = {"etc/garden-gateway": digests(root / "etc/garden-gateway"),
            "var/lib/garden-gateway": digests(data)}
    old_layout = set().union(*({f"{t}/{rel}" for rel in tree_files(previous / t)}
                               for t in TREES))

    # This checkout over it.
    output = _ok(_install(root, installed.checkout, env=env))
    assert not record.exists(), record.read_text()

    after = {rel: digests(root / rel) for rel in kept}
    assert {rel: {f: after[rel].get(f) for f in files} for rel, files in kept.items()} == kept, \
        "config and data are kept"
    # The one file this release adds there: the broker accounts (`garden-gateway devices`).
    assert {f"{rel}/{f}" for rel in kept for f in after[rel].keys() - kept[rel].keys()} == {
        "etc/garden-gateway/broker-accounts.yaml"}
    new_layout = set().union(*({f"{t}/{rel}" for rel in tree_files(installed.checkout / t)}
                               for t in TREES))
    left = sorted(rel for rel in old_layout - new_layout if os.path.lexists(opt / rel))
    assert left == [], f"files of the previous release left behind:\n{output}"
    assert not (opt / "gateway/app.py").exists()
    installed_files = set().union(*({f"{t}/{rel}" for rel in tree_files(opt / t)}
                                    for t in TREES))
    assert installed_files == new_layout
    orphans = [str(pyc.relative_to(opt)) for t in TREES for pyc in (opt / t).rglob("*.pyc")
               if not (pyc.parent.parent / (pyc.name.split(".")[0] + ".py")).is_file()]
    assert orphans == [], "compiled caches whose source is gone"

    # The unit's command, on what was kept.
    command = exec_start(root)
    assert command[1] == "run"
    # From a folder of its own: python -m and -c would import a gateway/ in the cwd first.
    check = _run([command[0], "check-config", *command[2:]], timeout=60, cwd=upgrade)
    assert check.returncode == 0, check.stdout + check.stderr
    python = str(opt / ".venv/bin/python")
    assert "usage: garden-gateway" in _ok(_run([python, "-m", "gateway", "--help"],
                                                timeout=60, cwd=upgrade))
    where = _ok(_run([python, "-c", "import gateway.ops.cli as c; print(c.__file__)"],
                     timeout=60, cwd=upgrade)).strip()
    assert where == str(opt / "gateway/ops/cli.py")
    with InstalledMosquitto(upgrade / "broker-current", root) as broker, \
            unit_running(root, broker.port, data, upgrade / "current.log", **no_ntp) as api:
        status = httpx.get(f"{api}/api/v1/status", headers=operator, timeout=5).json()
        assert status["spool"]["rows"] >= spool_rows, "the spool's rows are still to deliver"
        devices = httpx.get(f"{api}/api/v1/devices", headers=operator, timeout=5).json()
        assert KEPT_DEVICE in {d["id"] for d in devices}, "the registry is kept"
        history = httpx.get(f"{api}/api/v1/history", headers=operator, timeout=5, params={
            "device": KEPT_DEVICE, "field": "temperature_c", "range": "1h"}).json()
        assert history["points"], "the charts' history is kept"
        page = httpx.get(f"{api}/", timeout=5)
        assert page.status_code == 200
        assert page.content == (opt / "dashboard/index.html").read_bytes()
