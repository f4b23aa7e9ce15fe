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
#: Chassis commands (network function 0) and Chassis Control's values (IPMI 2.0, 28.2-28.3).
_GET_CHASSIS_STATUS = 0x01
_CHASSIS_CONTROL = 0x02
_CONTROL_OFF, _CONTROL_ON, _CONTROL_RESET = 0x00, 0x01, 0x03
#: Longest single wait inside pyghmi (seconds); see :func:`_io_wait`.
IO_WAIT_SLICE = 0.1


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    """pyghmi's wait for an answer (``session._io_wait``), without its lost wake-up.

    A waiting thread registers with pyghmi's I/O thread, which wakes it when a
    datagram from its BMC arrives. But the answer can arrive, and be filed in
    the session's packet queue, between the thread's last look and its
    registration; pyghmi then sleeps until its retransmit timer (0.5-1 s) for
    an answer that is already there (measured 1 exchange in 10-30 before this;
    benchmarks/README.md, power). So, after registering, look once more and
    do not sleep when something is waiting. A wait is also cut into slices of
    at most IO_WAIT_SLICE, so a wake-up lost some other way costs 0.1 s, not a
    retransmission; pyghmi's own retransmit and timeout logic is unchanged.
    (Slices of 10 ms, the earlier workaround, kept pyghmi's I/O thread
    spinning under fifty waiters: 0.2 CPU-seconds per fifty resets.)"""
    io = pyghmi_session
    event = threading.Event()
    if evq is not None:
        evq.append(event)
    deadline = min(timeout, IO_WAIT_SLICE) + io._monotonic_time()
    io.ioqueue.append((deadline, event, myaddr))
    if _answer_waiting(myaddr):
        return
    if deadline < io.selectdeadline:  # the I/O thread sleeps longer: break into its select
        io.iosockets[0].sendto(b"\x01", (io.myself, io.iosockets[0].getsockname()[1]))
    event.wait()


def _answer_waiting(myaddr: Any) -> bool:
    """Whether a datagram for this waiter is already filed: from its BMC (a
    directed wait), or from any BMC (an undirected one)."""
    if myaddr is None:
        return bool(pyghmi_session.sessionqueue)
    sessions = pyghmi_session.Session.bmc_handlers.get(myaddr, {})
    return any(session.pktqueue for session in list(sessions.values()))


#: pyghmi's own, kept for tests/test_dependency_internals.py (pyghmi is pinned for this).
PYGHMI_IO_WAIT = pyghmi_session._io_wait
pyghmi_session._io_wait = _io_wait

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

    # Power through the standard chassis commands, straight: pyghmi's
    # get_power/set_power first ask the BMC who made it (Get Device ID, for OEM
    # handlers, none of which changes power control) and set_power reads the
    # power state again before acting; on a BMC of uneven quality every
    # exchange saved is one less to lose.

    def power_status(self) -> Power:
        response = self._call("power status", "raw_command", netfn=0, command=_GET_CHASSIS_STATUS)
        data = response.get("data") or b""
        if not data:
            raise BmcError(self.target, "power status", "empty answer from the BMC to Get Chassis Status")
        return Power.ON if data[0] & 1 else Power.OFF

    def power_on(self) -> None:
        self._control("power on", _CONTROL_ON)

    def power_off(self) -> None:
        self._control("power off", _CONTROL_OFF)

    def power_reset(self) -> None:
        self._control("power reset", _CONTROL_RESET)

    def _control(self, operation: str, control: int) -> None:
        # A refusal (a completion code other than 0) comes back as pyghmi's "error".
        self._call(operation, "raw_command", netfn=0, command=_CHASSIS_CONTROL, data=(control,))

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
