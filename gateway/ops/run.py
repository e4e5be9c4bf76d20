"""Running the gateway from a command: load the config, set up logging, serve until a signal.

Shared by ``garden-gateway run`` (gateway/ops/cli.py) and ``garden-gateway demo``
(gateway/ops/demo.py), so neither imports the other. Signals are handled here and nowhere else,
before the web server starts.

Exit codes: 0 ok; 1 the gateway failed while running; 2 bad config or usage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.config import LoadedConfig, load_config
from gateway.core.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# The syslog priority of each level, for journald's "<N>" line prefix.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """Under systemd: no timestamp of our own (the journal stamps each line) and a ``<N>``
    syslog priority prefix, so ``journalctl -p warning`` shows warnings and worse."""

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in sorted(_PRIORITY.items(), reverse=True)
                         if record.levelno >= level), 7)
        return f"<{priority}>{super().format(record)}"


def to_journal(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout) is the journal: systemd sets JOURNAL_STREAM to its
    device:inode (a pipe to a terminal or a file is not)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat((stream or sys.stdout).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if to_journal(sys.stdout):
        handler.setFormatter(JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
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
