"""Careful BMC handling: one command at a time per BMC with a minimum gap,
retries with exponential backoff inside a total time budget, and the
meaning of each operation ("already on" is success; a reset of a machine
that is off powers it on).

BMCs of uneven quality drop packets, answer slowly and fall over when
commands come too fast; the worker runs every driver call through here.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from provisiond.power.base import (
    BmcError, BootDevice, Power, PowerDriver, Unreachable, Unsupported,
)

log = logging.getLogger("provisiond.power")
T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    #: Seconds between the end of one command to a BMC and the start of the next.
    min_gap: float = 0.2
    #: Seconds all attempts of one operation may take together.
    budget: float = 30.0
    #: First pause between attempts; doubles each time.
    backoff: float = 0.5


class Pacer:
    """Serializes commands per BMC and keeps the minimum gap between them."""

    def __init__(self, min_gap: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_gap = min_gap
        self.clock = clock
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}
        self._last_wall: dict[str, dt.datetime] = {}

    def seen_elsewhere(self, key: str, at: dt.datetime | None) -> None:
        """The BMC's last command ended at ``at`` (wall clock), by another
        worker perhaps: the next one here keeps the gap from then too."""
        if at is None:
            return
        ago = (dt.datetime.now(dt.timezone.utc) - at).total_seconds()
        with self._guard:
            self._last[key] = max(self._last.get(key, float("-inf")), self.clock() - ago)

    def last_command(self, key: str) -> dt.datetime | None:
        """When the last command to the BMC ended here (wall clock)."""
        return self._last_wall.get(key)

    @contextmanager
    def turn(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            wait = self._last.get(key, float("-inf")) + self.min_gap - self.clock()
            if wait > 0:
                time.sleep(wait)
            try:
                yield
            finally:
                self._last[key] = self.clock()
                self._last_wall[key] = dt.datetime.now(dt.timezone.utc)


@dataclass
class Outcome:
    ok: bool
    result: str | None
    message: str
    attempts: int
    #: Failed because the BMC did not answer (within the budget).
    unreachable: bool = False


class Runner:
    """Carries out one operation on one driver, within the policy."""

    def __init__(self, driver: PowerDriver, pacer: Pacer, policy: Policy) -> None:
        self.driver = driver
        self.pacer = pacer
        self.policy = policy
        self.attempts = 0
        self.deadline = time.monotonic() + policy.budget

    def call(self, fn: Callable[[], T]) -> T:
        """One driver call: paced, retried on retryable errors until the budget is spent."""
        pause = self.policy.backoff
        while True:
            self.attempts += 1
            try:
                with self.pacer.turn(self.driver.target.key):
                    return fn()
            except BmcError as exc:
                left = self.deadline - time.monotonic()
                if not exc.retryable or left <= pause:
                    if exc.retryable:
                        raise type(exc)(self.driver.target, _operation(exc),
                                        f"{exc.problem}; gave up after {self.attempts} attempts in "
                                        f"{self.policy.budget - left:.1f} s") from None
                    raise
                log.info("%s; retrying in %.1f s", exc, pause)
                time.sleep(pause)
                pause *= 2

    # ------------------------------------------------------------------ operations

    def power(self, argument: str) -> str:
        driver = self.driver
        if argument == "status":
            return str(self.call(driver.power_status))
        if argument == "reset":
            return self.call(driver.power_boot)
        if argument == "netboot":
            return self.netboot()
        try:
            now = self.call(driver.power_status)
        except Unsupported:
            now = None  # Wake-on-LAN: it cannot tell, it can only wake
        if argument == "on":
            if now == Power.ON:
                return "already on"
            self.call(driver.power_on)
            return "powered on"
        if now == Power.OFF:
            return "already off"
        self.call(driver.power_off)
        return "powered off"

    def netboot(self) -> str:
        """Boot from the network once: boot device PXE for the next boot, then reset (or power on)."""
        said = []
        if self.driver.sets_boot_device:
            self.call(lambda: self.driver.set_boot_device(BootDevice.PXE, False))
            said.append("boot device pxe (next boot only)")
        said.append(self.call(self.driver.power_boot))
        return ", then ".join(said)

    def bootdev(self, argument: str, persistent: bool) -> str:
        if argument == "status":
            return str(self.call(self.driver.get_boot_device))
        device = BootDevice(argument)
        self.call(lambda: self.driver.set_boot_device(device, persistent))
        return f"{device} ({'persistent' if persistent else 'next boot only'})"

    def run(self, action: str, argument: str, persistent: bool) -> str:
        if action == "power":
            return self.power(argument)
        return self.bootdev(argument, persistent)


def _operation(exc: BmcError) -> str:
    return str(exc.details.get("operation", "operation"))


def carry_out(driver: PowerDriver, pacer: Pacer, policy: Policy, action: str, argument: str,
              persistent: bool, what: str) -> Outcome:
    """Run ``action argument`` and say in words what happened."""
    runner = Runner(driver, pacer, policy)
    started = time.monotonic()
    try:
        result = runner.run(action, argument, persistent)
    except BmcError as exc:
        unreachable = isinstance(exc, Unreachable)
        return Outcome(False, None, f"{what} {'timed out' if unreachable else 'failed'}: {exc}", runner.attempts,
                       unreachable)
    finally:
        driver.close()
    took = time.monotonic() - started
    retries = f", {runner.attempts} attempts" if runner.attempts > _calls(action, argument) else ""
    return Outcome(True, result, f"{what}: {result} (BMC {driver.target.bmc}, {took:.2f} s{retries})",
                   runner.attempts)


def _calls(action: str, argument: str) -> int:
    """Driver calls an operation makes when nothing goes wrong."""
    return {"status": 1, "reset": 1, "netboot": 2}.get(argument, 2) if action == "power" else 1
