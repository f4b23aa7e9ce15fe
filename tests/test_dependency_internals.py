"""pyghmi and tftpy are pinned (pyproject.toml) because provisiond reaches
into their private internals: power/ipmi.py replaces pyghmi's
``session._io_wait`` and manages its session cache; netboot/tftp.py drives
tftpy's per-transfer context and ACK state from its own event loop. These
tests fail loudly, naming what moved, when an upgrade changes any of that:
re-read the two modules against the new version before raising a pin."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import requires, version

import pytest

PINNED = {"pyghmi": "1.6.19", "tftpy": "0.8.7"}


@pytest.mark.parametrize("package", sorted(PINNED))
def test_the_installed_version_is_the_pinned_one(package: str) -> None:
    pins = [line for line in requires("provisiond") or [] if re.match(rf"{package}\b", line, re.I)]
    assert pins == [f"{package}=={PINNED[package]}"], f"provisiond's requirement on {package}: {pins}"
    assert version(package) == PINNED[package], \
        f"{package} {version(package)} is installed; provisiond was checked against {PINNED[package]}"


def test_pyghmi_session_internals_power_ipmi_uses() -> None:
    import provisiond.power.ipmi as ipmi
    from pyghmi.ipmi.private import session

    # What _io_wait replaces: same call shape, same module state it touches.
    original = ipmi.PYGHMI_IO_WAIT
    assert list(inspect.signature(original).parameters) == ["timeout", "myaddr", "evq"]
    assert session._io_wait is ipmi._io_wait, "provisiond's _io_wait is not installed"
    for name in ("ioqueue", "iosockets", "myself", "selectdeadline", "sessionqueue", "_monotonic_time"):
        assert hasattr(session, name), f"pyghmi.ipmi.private.session.{name} is gone"
    assert callable(getattr(session.ioqueue, "append", None)) and isinstance(session.iosockets, list)
    # The session cache and the calls that manage it.
    assert isinstance(session.Session.bmc_handlers, dict)
    for name in ("_mark_broken", "logout", "pktqueue"):
        assert hasattr(session.Session, name) or name in inspect.getsource(session.Session.__init__), \
            f"pyghmi Session.{name} is gone"
    source = inspect.getsource(original)
    assert "ioqueue.append" in source and "selectdeadline" in source, \
        "pyghmi's _io_wait no longer waits the way ipmi._io_wait reproduces"


def test_tftpy_context_and_state_internals_netboot_tftp_uses() -> None:
    from tftpy.TftpContexts import TftpContext
    from tftpy.TftpShared import TftpException, TftpTimeoutExpectACK
    from tftpy.TftpStates import TftpStateExpectACK

    assert issubclass(TftpTimeoutExpectACK, TftpException)
    assert list(inspect.signature(TftpContext.__init__).parameters)[:6] == \
        ["self", "host", "port", "timeout", "retries", "localip"]
    assert "flock" in inspect.signature(TftpContext.__init__).parameters
    for name in ("cycle", "end", "getBlocksize"):
        assert callable(getattr(TftpContext, name, None)), f"TftpContext.{name} is gone"
    for name in ("sendOACK", "sendDAT", "resendLast", "handle"):
        assert callable(getattr(TftpStateExpectACK, name, None)), f"TftpStateExpectACK.{name} is gone"
    context = TftpContext("127.0.0.1", 69, 1.0, retries=3, flock=False)
    try:
        for name in ("sock", "metrics", "last_update", "retry_count", "timeout_expectACK", "next_block",
                     "fileobj", "options", "state", "pending_complete"):
            assert hasattr(context, name) or name in inspect.getsource(TftpStateExpectACK), \
                f"TftpContext has no {name}"
    finally:
        context.sock.close()
