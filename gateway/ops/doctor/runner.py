"""What every check shares: the verdicts, the report, and the runner that keeps a check that
breaks or hangs from spoiling the others.

Each check is a plain blocking function returning its :class:`Result` lines. The runner runs
every one of them at the same time, each on a daemon thread of its own under a time limit
(:func:`_guarded`): a check that raises is one FAIL line saying so, a check that hangs past its
limit (a DNS lookup, a network path that drops packets) is one FAIL line and is abandoned, and
the process still exits on time. Blocking work stays on those threads; the checks themselves
know nothing of asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from gateway.ops.run import EXIT_FAILED as EXIT_FAILED
from gateway.ops.run import EXIT_OK as EXIT_OK
from gateway.ops.run import EXIT_USAGE as EXIT_USAGE

Verdict = Literal["OK", "WARN", "FAIL", "SKIP"]
# The subjects, in the order the report shows them.
CHECKS = ("config", "broker", "accounts", "influx", "serial", "clock", "disk", "systemd",
          "api")
SKIPPABLE = tuple(c for c in CHECKS if c != "config")

DEFAULT_UNIT = "garden-gateway"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the report."""

    check: str
    name: str
    verdict: Verdict
    found: str
    fix: str = ""
    details: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.verdict:<5} {self.name}: {self.found}"
        if self.fix:
            text += f" — {self.fix}"
        return "\n".join([text, *(f"        - {d}" for d in self.details)])


@dataclass(frozen=True, slots=True)
class Options:
    timeout_s: float = 5.0
    line_wait_s: float = 3.0
    unit: str = DEFAULT_UNIT
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Report:
    results: tuple[Result, ...]
    config_valid: bool

    @property
    def exit_code(self) -> int:
        if not self.config_valid:
            return EXIT_USAGE
        return EXIT_FAILED if any(r.verdict == "FAIL" for r in self.results) else EXIT_OK

    def counts(self) -> dict[str, int]:
        return {v: sum(1 for r in self.results if r.verdict == v)
                for v in ("OK", "WARN", "FAIL", "SKIP")}

    def text(self) -> str:
        counts = self.counts()
        summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        return "\n".join([*(r.line() for r in self.results), f"doctor: {summary}"])

    def as_json(self) -> str:
        return json.dumps({
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [dataclasses.asdict(r) for r in self.results],
        }, indent=2)


def in_report_order(results: Iterable[Result]) -> list[Result]:
    """The subjects in their documented order; within one, as the checks gave them (a bus's
    slaves after its port: ``modbus`` lines sort with ``serial``)."""
    order = {c: i for i, c in enumerate(CHECKS)}
    order["modbus"] = order["serial"]
    return sorted(results, key=lambda r: order.get(r.check, len(order)))


# -- running checks: daemon threads under a time limit -----------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """One check to run: its subject (for ``--skip``), its name, its time limit."""

    check: str
    name: str
    budget_s: float
    fn: Callable[[], list[Result]]


async def _in_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on a daemon thread: abandoned (not waited for) when the caller gives up."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # The loop is gone when the check was abandoned and the run is over.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=f"doctor {name}", daemon=True).start()
    return await future


async def _guarded(check: str, name: str, budget_s: float,
                   fn: Callable[[], list[Result]]) -> list[Result]:
    try:
        async with asyncio.timeout(budget_s):
            return await _in_thread(fn, name)
    except TimeoutError:
        return [Result(check, name, "FAIL", f"no verdict within {budget_s:g} s",
                       "something hangs (DNS? a network path that drops packets?); try again "
                       "with a longer --timeout")]
    except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
        return [Result(check, name, "FAIL", f"the check itself failed: "
                       f"{type(exc).__name__}: {exc}",
                       "this is a doctor bug: please report it with this line")]


async def run_jobs(jobs: Sequence[Job]) -> list[Result]:
    """Every job at once, each guarded; their lines in the order of ``jobs``."""
    outcomes = await asyncio.gather(*(_guarded(j.check, j.name, j.budget_s, j.fn)
                                      for j in jobs))
    return [result for outcome in outcomes for result in outcome]


# -- programs a check asks (timedatectl, systemctl) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandOutput:
    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str], float], CommandOutput]


def run_command(argv: Sequence[str], timeout_s: float) -> CommandOutput:
    """Run ``argv``; FileNotFoundError when there is no such program."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                          check=False, env={**os.environ, "LC_ALL": "C"})
    return CommandOutput(done.returncode, done.stdout, done.stderr)


# -- wording the checks share --------------------------------------------------------------------

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
