"""Running the gateway from a command: load the config, set up logging, serve until a signal.

Shared by ``garden-gateway run`` (gateway/ops/cli.py) and ``garden-gateway demo``
(gateway/ops/demo.py), so neither imports the other. Signals are handled here and nowhere else,
before the web server starts.

Exit codes: 0 ok; 1 the gateway failed while running; 2 bad config or usage.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from gateway.config import LoadedConfig, load_config
from gateway.core.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; one line per batch is too chatty for an SD card.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def load_config_or_report(path: Path) -> LoadedConfig | None:
    """The config at ``path``; None once every problem is printed (exit 2 then)."""
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{path}: configuration is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return loaded


async def serve(loaded: LoadedConfig, on_started: str = "") -> int:
    """Run the gateway until SIGTERM or SIGINT; print ``on_started`` once it is up."""
    from gateway.app.gateway import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals are handled here and nowhere else, before the web server starts.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(loaded.config) as gateway:
        if on_started:
            print(on_started, flush=True)
        await gateway.run(stop)
    return EXIT_OK
