"""IPMI 2.0 (lanplus) through pyghmi.

One :class:`IpmiDriver` is one session with one BMC, opened on first use and
logged out by :meth:`close`. pyghmi retransmits lost packets itself within a
few seconds; what still fails reaches the worker as :class:`Unreachable`
(retried with backoff) or :class:`AuthFailed` (not retried).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as pyghmi_session

from provisiond.power.base import (
    AuthFailed, BmcError, BootDevice, BootSetting, Power, PowerDriver, Unreachable,
)

#: IPMI "boot device selector" (Get System Boot Options, parameter 5, data 2 bits 5:2).
_SELECTOR = {0: BootDevice.DEFAULT, 1: BootDevice.PXE, 2: BootDevice.DISK}
#: pyghmi's names for our devices.
_PYGHMI_DEVICE = {BootDevice.PXE: "network", BootDevice.DISK: "hd", BootDevice.DEFAULT: "default"}
#: pyghmi's words for a refused login.
_AUTH_WORDS = ("password", "unauthorized", "username", "user name", "privilege", "authentication")
#: pyghmi's words when the BMC stopped answering (its retransmissions ran out).
_NO_ANSWER_WORDS = ("timeout", "no longer connected")
DEFAULT_PORT = 623
#: Longest single wait inside pyghmi (seconds); see :func:`_bounded_io_wait`.
IO_WAIT_SLICE = 0.01


def _bounded_io_wait(timeout: float, myaddr: Any = None, evq: Any = None,
                     _wait: Any = pyghmi_session._io_wait) -> Any:
    """pyghmi's wait for an answer, in slices of at most 10 ms.

    pyghmi's I/O thread can read a BMC's answer before the waiting thread has
    registered to be woken, which then sleeps until its retransmit timer
    (0.5-1 s) for an answer that is already there: measured 1 exchange in 10-30
    (benchmarks/README.md, power). Waiting in short slices makes the caller look
    again; pyghmi's own retransmit and timeout logic is unchanged."""
    return _wait(min(timeout, IO_WAIT_SLICE), myaddr, evq)


pyghmi_session._io_wait = _bounded_io_wait

# pyghmi hands every Command for the same BMC and credentials the same live
# session, to drivers in other threads too. So a driver logs a session out only
# when no other driver holds it, and sessions for one BMC are taken and logged
# out one at a time (no driver picks up a session that is being logged out).
_guard = threading.Lock()
_bmc_locks: dict[str, threading.Lock] = {}
_holders: Counter[Any] = Counter()


def _bmc_lock(key: str) -> threading.Lock:
    with _guard:
        return _bmc_locks.setdefault(key, threading.Lock())


def _hold(session: Any) -> None:
    with _guard:
        _holders[session] += 1


def _release(session: Any) -> bool:
    """Let go of ``session``; True when no driver holds it any more."""
    with _guard:
        _holders[session] -= 1
        if _holders[session] > 0:
            return False
        del _holders[session]
        return True


class IpmiDriver(PowerDriver):
    name = "ipmi"

    _command: Any = None

    def _session(self, operation: str) -> Any:
        if self._command is None:
            target = self.target
            if not target.address:
                raise BmcError(target, operation, "the host's BMC has no address")
            with _bmc_lock(target.key):
                try:
                    # User and password as bytes: pyghmi files a new session under the
                    # credentials as given but forgets it under their bytes, so with str
                    # a session that was logged out or broke stays filed, and every later
                    # Command for this BMC gets it back, dead.
                    command = ipmi_command.Command(
                        bmc=target.address, userid=(target.user or "").encode(),
                        password=(target.password or "").encode(),
                        port=target.port or DEFAULT_PORT, keepalive=False)
                except Exception as exc:  # pyghmi raises bare IpmiException and socket errors
                    raise self._error(operation, exc, login=True) from None
                _hold(command.ipmi_session)
            self._command = command
        return self._command

    def _call(self, operation: str, method: str, *args: Any, **kwargs: Any) -> Any:
        session = self._session(operation)
        try:
            result = getattr(session, method)(*args, **kwargs)
        except Exception as exc:
            self._drop(broken=True)
            raise self._error(operation, exc) from None
        if isinstance(result, dict) and "error" in result:  # pyghmi's {"error": "timeout", ...}
            raise self._error(operation, RuntimeError(str(result["error"])))
        return result

    def _error(self, operation: str, exc: Exception, login: bool = False) -> BmcError:
        text = str(exc) if str(exc) not in ("", "None") else ""
        if any(word in text.lower() for word in _AUTH_WORDS):
            return AuthFailed(self.target, operation,
                              f"the BMC refused user {self.target.user or '(none)'!r}: {text}")
        if not text or isinstance(exc, OSError) or any(word in text.lower() for word in _NO_ANSWER_WORDS):
            stage = "logging in" if login else "waiting for the answer"
            return Unreachable(self.target, operation, f"no answer from the BMC while {stage}"
                               + (f" ({text})" if text else ""))
        return BmcError(self.target, operation, text)

    def power_status(self) -> Power:
        result = self._call("power status", "get_power")
        return Power.ON if result.get("powerstate") == "on" else Power.OFF

    def power_on(self) -> None:
        self._call("power on", "set_power", "on")

    def power_off(self) -> None:
        self._call("power off", "set_power", "off")

    def power_reset(self) -> None:
        self._call("power reset", "set_power", "reset")

    def set_boot_device(self, device: BootDevice, persistent: bool) -> None:
        self._call(f"set boot device {device}", "set_bootdev", _PYGHMI_DEVICE[device], persist=persistent)

    def get_boot_device(self) -> BootSetting:
        # Decoded from the raw answer: pyghmi reports "default" whenever the
        # BMC clears the flags' valid bit, which some BMCs (and ipmi_sim) do.
        response = self._call("get boot device", "raw_command", netfn=0, command=9, data=(5, 0, 0))
        data = response.get("data") or b""
        if len(data) < 4:
            raise BmcError(self.target, "get boot device", f"short answer from the BMC: {bytes(data).hex()}")
        persistent = bool(data[2] & 0b0100_0000)
        device = _SELECTOR.get((data[3] >> 2) & 0b1111, BootDevice.DEFAULT)
        return BootSetting(device, persistent)

    def _drop(self, broken: bool = False) -> None:
        """Forget a session that failed (or is done with): the next call logs in afresh."""
        command, self._command = self._command, None
        if command is None:
            return
        with _bmc_lock(self.target.key):
            if broken:
                # pyghmi hands a cached session to the next Command for this BMC
                # unless it is marked broken; one that failed mid-command (seen:
                # caught between logout and re-login) must not come back.
                try:
                    command.ipmi_session._mark_broken()
                except Exception:
                    pass
            if not _release(command.ipmi_session):
                return  # another driver still uses it
            try:
                command.ipmi_session.logout()
            except Exception:  # a broken session may not log out; it times out on the BMC
                pass

    def close(self) -> None:
        self._drop()
