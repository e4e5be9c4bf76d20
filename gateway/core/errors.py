"""The gateway's errors, in one tree::

    GatewayError
    ├── ConfigError          the config file or an override is wrong (exit 2); .problems lists all
    ├── SpoolError           the on-disk spool cannot be opened or written
    │   └── SpoolReadError       a spool file cannot be inspected (gateway.store.spool; .kind)
    ├── StackError           a private Mosquitto / InfluxDB could not be started (tests, demo)
    ├── MissingFileError     a shipped file (pages, example config) is not installed (.path)
    └── InfluxError          a write to InfluxDB failed; .status is the HTTP status or None
        ├── InfluxAuthError      401/403: credentials or rights; forwarding pauses
        ├── InfluxRejectedError  400/422: the server refuses some lines; they are quarantined
        ├── InfluxTooLargeError  413: the batch is split
        └── InfluxRetryableError 429, 5xx, network: back off (.retry_after when the server says)

Bad device input is :class:`devices.reading.DecodeError`: it never leaves the ingest path,
it is counted, logged with rate limiting and dead-lettered.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "invalid configuration")
        self.problems = problems


class SpoolError(GatewayError):
    pass


class StackError(GatewayError, RuntimeError):
    pass


class InfluxError(GatewayError):
    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class InfluxAuthError(InfluxError):
    pass


class InfluxRejectedError(InfluxError):
    pass


class InfluxTooLargeError(InfluxError):
    pass


class InfluxRetryableError(InfluxError):
    def __init__(
        self, message: str, *, status: int | None = None, url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, url=url)
        self.retry_after = retry_after
