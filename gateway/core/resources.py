"""The files the gateway ships beside its code: the pages and the example config.

They stay in the repository's top-level ``dashboard/`` and ``config/``, where the client wants
them. pyproject.toml maps those folders into the import namespace as the data packages
``garden_gateway_files.dashboard`` and ``garden_gateway_files.config``, so one lookup, the
import system's, finds them wherever the gateway is installed:

- an editable install (``./dev``'s ``.venv`` for a checkout, ``/opt/garden-gateway/.venv`` made
  by systemd/install.sh): setuptools' editable finder maps the names to the checkout's own
  folders, so an edited page is served as it is;
- a wheel: the files were copied to ``site-packages/garden_gateway_files/``.

Why not ``Path(__file__).parents[2] / "dashboard"``: in a wheel that is site-packages' parent,
where nothing is, and the pages quietly were not served. Why not :func:`importlib.resources.files`:
these are namespace packages (the client's folders have no ``__init__.py``), for which it gives
a ``MultiplexedPath`` that refuses the editable finder's placeholder entry; the web server wants
a real folder anyway.

A file that is not there is :class:`MissingFileError` naming where it was looked for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gateway.core.errors import GatewayError

DATA_PACKAGE = "garden_gateway_files"
# What the pages need to work: gateway/web/api.py serves these (the regency's two:
# gateway/regency/service.py).
PAGE_FILES = ("index.html", "operator.html", "apidocs.html", "regency.html",
              "regency-operator.html", "static")


class MissingFileError(GatewayError):
    """A file the gateway ships is not where its installation put it: reinstall.

    ``path`` is where it was looked for (``None`` when its whole data package is missing).
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def pages_dir() -> Path:
    """The folder of the residents' and operators' pages (``index.html``, ``static/`` ...)."""
    folder = _folder("dashboard", "the pages")
    for name in PAGE_FILES:
        path = folder / name
        if not path.exists():
            raise MissingFileError(f"the pages are incomplete: {path} is missing; {_REINSTALL}",
                                   path=path)
    return folder


def example_config() -> Path:
    """``config/example.yaml``: a complete working config (the demo's default)."""
    return config_file("example.yaml")


def config_file(name: str) -> Path:
    """A file of the shipped ``config/`` folder by its name."""
    path = _folder("config", "the shipped config files") / name
    if not path.is_file():
        raise MissingFileError(f"{path} is missing; {_REINSTALL}", path=path)
    return path


_REINSTALL = ("reinstall the gateway (a park's Pi: systemd/install.sh again; a checkout: "
              "./dev or pip install -e .; a wheel: pip install it again)")


def _folder(name: str, what: str) -> Path:
    package = f"{DATA_PACKAGE}.{name}"
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # no garden_gateway_files at all
        spec = None
    # A namespace package: its locations hold the editable finder's placeholder beside the
    # folder, which is not a directory.
    locations = [] if spec is None else list(spec.submodule_search_locations or ())
    folders = [Path(p) for p in locations if Path(p).is_dir()]
    if not folders:
        code = Path(__file__).resolve().parents[1]
        raise MissingFileError(
            f"{what} ({package}) are not installed beside the gateway's code in {code}; "
            f"{_REINSTALL}")
    return folders[0].resolve()
