"""``garden-gateway doctor``: what is wrong at this park, each with a plain verdict and a fix.

For the field technician at the park with a laptop or a phone's SSH session. One line per
check: ``OK``, ``WARN`` or ``FAIL``, the check's name, what was found and, for WARN and FAIL, a
concrete fix. ``--json`` gives the same for machines. Exit codes follow ``gateway/ops/cli.py``: 0
when nothing failed (warnings allowed), 1 when a check failed, 2 for bad usage or a config that
cannot be read or is not valid.

One module per subject, in the order the report shows them:

- :mod:`.config`: the config file, with the service's secrets (``secrets.env``);
- :mod:`.broker`: an MQTT connect as the gateway would, then the gateway's retained status;
- :mod:`.accounts`: the broker's accounts, password and ACL files, and the publishers the
  ACL refuses (or would refuse, before it is enforced);
- :mod:`.influx`: ``/ping``, then an empty write (nothing written);
- :mod:`.ports`: each serial port and Modbus bus, a line from each line sensor, a poll of
  each slave;
- :mod:`.clock`: synchronised per ``timedatectl`` or the kernel, and not before 2026;
- :mod:`.disk`: free space for ``data_dir``, and the spool, read through the spool's own
  read-only API;
- :mod:`.systemd`: the unit's state, enablement and restarts;
- :mod:`.api`: the running gateway's ``/health``.

:mod:`.runner` holds what they share: :class:`Result`, :class:`Report`, :class:`Options`, and the
runner that runs every check at the same time, each on a daemon thread under its own time limit,
so a check that breaks or hangs is one FAIL line, never the end of the run.
:mod:`.command` says which checks run with what limit, and parses the command line.
"""

from gateway.ops.doctor.accounts import check_accounts
from gateway.ops.doctor.api import check_api
from gateway.ops.doctor.broker import check_broker
from gateway.ops.doctor.clock import (
    CLOCK_FLOOR,
    STA_UNSYNC,
    ClockSources,
    adjtimex_status,
    check_clock,
    timedatectl_synchronised,
)
from gateway.ops.doctor.command import add_arguments, cmd_doctor, main, register, run_doctor
from gateway.ops.doctor.config import SECRETS_ENV, check_config, doctor_env, read_env_file
from gateway.ops.doctor.disk import (
    DISK_FAIL_PCT,
    DISK_WARN_PCT,
    SPOOL_FULL_PCT,
    SPOOL_STALE_S,
    check_disk,
    check_files,
    check_spool,
)
from gateway.ops.doctor.influx import check_influx
from gateway.ops.doctor.ports import check_modbus_bus, check_serial_source, stable_name
from gateway.ops.doctor.runner import (
    CHECKS,
    DEFAULT_UNIT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    SKIPPABLE,
    CommandOutput,
    CommandRunner,
    Job,
    Options,
    Report,
    Result,
    Verdict,
    run_command,
)
from gateway.ops.doctor.runner import _guarded as _guarded  # the tests time it directly
from gateway.ops.doctor.systemd import check_systemd

__all__ = [
    "CHECKS",
    "CLOCK_FLOOR",
    "DEFAULT_UNIT",
    "DISK_FAIL_PCT",
    "DISK_WARN_PCT",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SECRETS_ENV",
    "SKIPPABLE",
    "SPOOL_FULL_PCT",
    "SPOOL_STALE_S",
    "STA_UNSYNC",
    "ClockSources",
    "CommandOutput",
    "CommandRunner",
    "Job",
    "Options",
    "Report",
    "Result",
    "Verdict",
    "add_arguments",
    "adjtimex_status",
    "check_accounts",
    "check_api",
    "check_broker",
    "check_clock",
    "check_config",
    "check_disk",
    "check_files",
    "check_influx",
    "check_modbus_bus",
    "check_serial_source",
    "check_spool",
    "check_systemd",
    "cmd_doctor",
    "doctor_env",
    "main",
    "read_env_file",
    "register",
    "run_command",
    "run_doctor",
    "stable_name",
    "timedatectl_synchronised",
]
