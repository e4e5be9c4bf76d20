"""The built wheel carries the pages and the example config, and a gateway installed from it
serves them; a checkout (this editable install) finds the same files the same way.

What is real: ``pip wheel`` of a frozen copy of the checkout (no build isolation: this venv's
setuptools, nothing downloaded), a fresh venv made by ``python -m venv``, ``pip install`` of the
wheel into it from no index, and the installed ``garden-gateway`` run from a folder outside the
checkout against a private Mosquitto. The dependencies come from this project's venv through a
``.pth`` line in the fresh venv: a path entry, so this venv's editable finder (which maps
``gateway`` to the checkout) is never loaded there, and the tests assert that the code and the
files come from the fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.core import resources
from gateway.testing.stack import PrivateMosquitto, free_port
from tests.conftest import ROOT, serving

# What the build reads from the checkout; frozen once, because other work changes the checkout
# while the tests run (and a build writes build/ and *.egg-info beside the sources).
SOURCES = ("gateway", "devices", "dashboard", "config", "pyproject.toml", "README.md")
# The folders the wheel ships as data, beside the code: top-level folder -> data package.
SHIPPED = {"dashboard": "garden_gateway_files/dashboard", "config": "garden_gateway_files/config"}
STEP_TIMEOUT_S = 120


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    command: Path  # the garden-gateway console script
    site_packages: Path


def _run(args: list[str | Path], *, cwd: Path, timeout: float = STEP_TIMEOUT_S,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=cwd, env=env if env is not None else _env())


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _env(**extra: str) -> dict[str, str]:
    # Nothing of this session's may point the child at the checkout or reconfigure it.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GARDEN_GATEWAY_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def make_venv(parent: Path, wheel: Path) -> Venv:
    """A fresh venv with ``wheel`` installed and this venv's packages as its dependencies."""
    root = parent / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", root], cwd=parent))
    python = root / "bin" / "python"
    site = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         cwd=parent)).strip())
    _ok(_run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
              "--no-deps", "--no-index", "--no-cache-dir", wheel], cwd=parent))
    # After the install: pip must not see this venv's (editable) garden-gateway as installed.
    ours = Path(sysconfig.get_path("purelib"))
    assert ours != site
    (site / "zz-garden-gateway-test-deps.pth").write_text(f"{ours}\n", encoding="utf-8")
    return Venv(root, python, root / "bin" / "garden-gateway", site)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for item in SOURCES:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, source / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, source / item)
    return source


@pytest.fixture(scope="module")
def wheel(frozen: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
              "--no-build-isolation", "--no-index", "--no-cache-dir", "-w", out, frozen],
             cwd=frozen))
    [built] = out.glob("garden_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("installed"), wheel)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder outside the checkout: nothing can be imported from the cwd."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="module")
def where(venv: Venv, outside: Path) -> dict[str, Path]:
    """Where the installed gateway finds its code and files, as it says itself."""
    script = ("import json, devices, gateway\n"
              "from gateway.core import resources\n"
              "print(json.dumps({'gateway': gateway.__file__, 'devices': devices.__file__,\n"
              "    'pages': str(resources.pages_dir()),\n"
              "    'example': str(resources.example_config())}))\n")
    found = json.loads(_ok(_run([venv.python, "-c", script], cwd=outside)))
    return {key: Path(value) for key, value in found.items()}


def test_wheel_carries_every_module_the_pages_and_the_config(wheel: Path, frozen: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    code = {f"{top}/{rel}" for top in ("gateway", "devices")
            for rel in _files(frozen / top) if rel.endswith(".py")}
    missing = sorted({str(Path(n).parent).replace("/", ".") for n in code - names})
    assert missing == [], ("packages not in the wheel: add them to [tool.setuptools] packages "
                           "in pyproject.toml")
    for folder, package in SHIPPED.items():
        shipped = {n.removeprefix(package + "/") for n in names if n.startswith(package + "/")}
        assert shipped == _files(frozen / folder), folder
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {
        "gateway", "devices", "garden_gateway_files"}, "nothing else lands in site-packages"


def test_code_and_files_come_from_the_wheel(venv: Venv, where: dict[str, Path],
                                            frozen: Path) -> None:
    for key, path in where.items():
        assert path.is_relative_to(venv.site_packages), f"{key} from {path}, not the wheel"
    assert where["pages"] == venv.site_packages / "garden_gateway_files" / "dashboard"
    assert (where["pages"] / "index.html").read_bytes() == \
        (frozen / "dashboard/index.html").read_bytes()
    assert where["example"].read_bytes() == (frozen / "config/example.yaml").read_bytes()


def test_a_checkout_finds_its_own_folders_the_same_way() -> None:
    # This session runs from ./dev's editable install of the checkout.
    assert resources.pages_dir() == ROOT / "dashboard", "is .venv the editable install of ROOT?"
    assert resources.example_config() == ROOT / "config" / "example.yaml"
    assert resources.config_file("mosquitto-garden.conf") == ROOT / "config/mosquitto-garden.conf"
    with pytest.raises(resources.MissingFileError, match=r"/config/no-such\.yaml is missing"):
        resources.config_file("no-such.yaml")


def test_installed_check_config_accepts_the_shipped_example(
    venv: Venv, where: dict[str, Path], outside: Path,
) -> None:
    output = _ok(_run([venv.command, "check-config", "--config", where["example"]], cwd=outside))
    assert f"{where['example']}: ok" in output


def _run_env(data_dir: Path, api_port: int, mqtt_port: int,
             https_port: int | None = None) -> dict[str, str]:
    return _env(
        # The example config serves the operator side over HTTPS: never on the machine's 8443.
        GARDEN_GATEWAY_API__TLS__PORT=str(https_port or free_port()),
        GARDEN_GATEWAY_DATA_DIR=str(data_dir),
        GARDEN_GATEWAY_MQTT__HOST="127.0.0.1",
        GARDEN_GATEWAY_MQTT__PORT=str(mqtt_port),
        GARDEN_GATEWAY_MQTT__PASSWORD="unused-by-an-anonymous-broker",
        GARDEN_GATEWAY_API__HOST="127.0.0.1",
        GARDEN_GATEWAY_API__PORT=str(api_port),
        GARDEN_GATEWAY_API__OPERATOR_TOKEN="packaging-test-token-0123456789",
        GARDEN_GATEWAY_INFLUX__ENABLED="false",
        # This machine has no NTP; the readings' clock is not what this test is about.
        GARDEN_GATEWAY_CLOCK__REQUIRE_SYNC="no",
    )


def test_gateway_from_the_wheel_serves_the_residents_page_and_static_files(
    venv: Venv, where: dict[str, Path], outside: Path, mosquitto: PrivateMosquitto,
    tmp_path: Path,
) -> None:
    api_port, https_port = free_port(), free_port()
    with serving([str(venv.command), "run", "--config", str(where["example"])],
                 api=f"http://127.0.0.1:{api_port}", log_path=tmp_path / "gateway.log",
                 env=_run_env(tmp_path / "data", api_port, mosquitto.port, https_port),
                 cwd=outside,
                 what="the wheel's gateway /health") as api:
        page = httpx.get(f"{api}/", timeout=5)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == (where["pages"] / "index.html").read_bytes()
        script = httpx.get(f"{api}/static/resident.js", timeout=5)
        assert script.status_code == 200
        assert script.content == (where["pages"] / "static/resident.js").read_bytes()
        # The example config turns HTTPS on: the operator page is served there only.
        moved = httpx.get(f"{api}/operator", timeout=5)
        assert moved.status_code == 308
        assert moved.headers["location"] == f"https://127.0.0.1:{https_port}/operator"
        trust = ssl.create_default_context(cafile=str(tmp_path / "data/tls/gateway.crt"))
        secure = httpx.get(moved.headers["location"], timeout=5, verify=trust)
        assert secure.status_code == 200
        assert secure.content == (where["pages"] / "operator.html").read_bytes()


def test_missing_pages_stop_the_gateway_with_the_path(
    wheel: Path, tmp_path: Path, outside: Path,
) -> None:
    broken = make_venv(tmp_path, wheel)
    pages = broken.site_packages / "garden_gateway_files" / "dashboard"
    (pages / "index.html").unlink()
    example = broken.site_packages / "garden_gateway_files" / "config" / "example.yaml"
    result = _run([broken.command, "run", "--config", example], cwd=outside, timeout=60,
                  env=_run_env(tmp_path / "data", free_port(), free_port()))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{pages / 'index.html'} is missing" in result.stdout + result.stderr
