"""IpmiDriver against a real IPMI peer: OpenIPMI's ipmi_sim on loopback.

What the BMC was told is read where it lands, in the simulated chassis (its
program records every command), and the boot flags are cross-checked with
ipmitool, the reference client. Retries, pacing and budgets are exercised
through :func:`provisiond.power.bmc.carry_out` as the worker runs them, on a
clean link, through a relay that loses or delays datagrams, against a port
where nothing listens, and with a wrong password.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pyghmi.exceptions import IpmiException

from provisiond.power.base import (
    AuthFailed, BmcError, BootDevice, BootSetting, DriverOptions, Power, Target, Unreachable,
)
from provisiond.power.bmc import Outcome, Pacer, Policy, Runner, carry_out
from provisiond.power.ipmi import IpmiDriver
from tests.power.ipmisim import SimBmc, StartBmc, UdpRelay, free_udp_port

#: Quick pacing for a clean loopback link.
QUICK = Policy(min_gap=0.05, budget=20.0, backoff=0.2)
#: ipmitool's words for the boot device selector (bootparam 5).
IPMITOOL_DEVICE = {"Force PXE": BootDevice.PXE, "Force Boot from default Hard-Drive": BootDevice.DISK,
                   "No override": BootDevice.DEFAULT}


def driver(target: Target) -> IpmiDriver:
    return IpmiDriver(target, DriverOptions())


def run(target: Target, action: str, argument: str, persistent: bool = False,
        policy: Policy = QUICK) -> Outcome:
    """One operation as the worker carries it out: a fresh driver, paced, retried, closed."""
    return carry_out(driver(target), Pacer(policy.min_gap), policy, action, argument, persistent,
                     f"{action} {argument}")


def told(bmc: SimBmc) -> list[tuple[str, str]]:
    """What the BMC told the chassis to do, in order: ("power", "1"), ("boot", "pxe"), ..."""
    return [(action.name, action.value) for action in bmc.actions()]


def ipmitool_boot(bmc: SimBmc) -> BootSetting:
    """The boot flags as ipmitool reads them (``chassis bootparam get 5``)."""
    text = bmc.ipmitool("chassis", "bootparam", "get", "5")
    selector = re.search(r"Boot Device Selector : (.+?)\s*$", text, re.MULTILINE)
    assert selector is not None, text
    if "Options apply to all future boots" in text:
        persistent = True
    else:
        assert "Options apply to only next boot" in text, text
        persistent = False
    return BootSetting(IPMITOOL_DEVICE[selector.group(1)], persistent)


# --------------------------------------------------------------------------- the driver, call by call


def test_power_calls_reach_the_chassis(bmc: SimBmc) -> None:
    ipmi = driver(bmc.target())
    try:
        assert ipmi.power_status() == Power.OFF
        ipmi.power_on()
        assert bmc.power and ipmi.power_status() == Power.ON
        ipmi.power_reset()
        assert bmc.power
        ipmi.power_off()
        assert not bmc.power and ipmi.power_status() == Power.OFF
    finally:
        ipmi.close()
    assert told(bmc) == [("power", "1"), ("reset", "1"), ("power", "0")]


def test_pxe_for_the_next_boot_only(bmc: SimBmc) -> None:
    ipmi = driver(bmc.target())
    try:
        ipmi.set_boot_device(BootDevice.PXE, persistent=False)
        assert ipmi.get_boot_device() == BootSetting(BootDevice.PXE, persistent=False)
    finally:
        ipmi.close()
    assert ipmitool_boot(bmc) == BootSetting(BootDevice.PXE, persistent=False)
    assert told(bmc) == [("boot", "pxe")]


def test_disk_persistently(bmc: SimBmc, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request carries "valid, persistent, disk". ipmi_sim keeps the device
    but not the flags byte (it reads back 00), so persistence is checked on the
    request, and the reading is checked against ipmitool's."""
    sent = record_raw_commands(monkeypatch)
    ipmi = driver(bmc.target())
    try:
        ipmi.set_boot_device(BootDevice.DISK, persistent=True)
        reading = ipmi.get_boot_device()
    finally:
        ipmi.close()
    # Set System Boot Options (netfn 0, command 8), parameter 5: valid|persistent, disk (2 << 2).
    assert (0, 8, (5, 0b1100_0000, 0b0000_1000, 0, 0, 0)) in sent
    assert reading.device == BootDevice.DISK
    assert ipmitool_boot(bmc) == reading
    assert told(bmc) == [("boot", "default")]  # ipmi_sim's chassis knows only none/pxe/default


def test_reading_a_persistent_boot_device() -> None:
    """The flags byte ipmi_sim drops, decoded from a BMC that keeps it."""
    ipmi = driver(Target(serial="S1", type="ipmi", address="192.0.2.1"))
    ipmi._command = _Answers({"data": bytes([1, 5, 0b1100_0000, 0b0000_0100, 0, 0, 0])})
    assert ipmi.get_boot_device() == BootSetting(BootDevice.PXE, persistent=True)


@pytest.mark.parametrize(("problem", "kind"), [
    (None, Unreachable),                             # pyghmi's dead port: IpmiException(None)
    ("timeout", Unreachable),                        # pyghmi's {"error": "timeout"}
    ("Session no longer connected", Unreachable),    # pyghmi's retransmissions ran out
    ("Incorrect password provided", AuthFailed),
    ("Unauthorized name", AuthFailed),
    ("Invalid data field in request", BmcError),
])
def test_pyghmi_failures_are_told_apart(problem: str | None, kind: type[BmcError]) -> None:
    ipmi = driver(Target(serial="S1", type="ipmi", address="192.0.2.1", user="admin"))
    error = ipmi._error("power status", IpmiException(problem))
    assert type(error) is kind
    assert error.retryable == (kind is not AuthFailed)


def test_an_error_answer_is_told_apart_too() -> None:
    ipmi = driver(Target(serial="S1", type="ipmi", address="192.0.2.1"))
    ipmi._command = _Answers({"error": "timeout", "code": 0xFFFF})
    with pytest.raises(Unreachable, match="get boot device: no answer from the BMC"):
        ipmi.get_boot_device()


def test_a_wrong_password_is_refused_at_once(bmc: SimBmc) -> None:
    ipmi = driver(bmc.target(password="not-the-password"))
    started = time.monotonic()
    with pytest.raises(AuthFailed, match="refused user 'admin'"):
        ipmi.power_status()
    assert time.monotonic() - started < 3


# --------------------------------------------------------------------------- operations (carry_out)


def test_power_on_when_on_is_success_without_a_command(ipmi_sim: StartBmc) -> None:
    bmc = ipmi_sim(power=True)
    outcome = run(bmc.target(), "power", "on")
    assert outcome.ok and outcome.result == "already on", outcome.message
    assert told(bmc) == []


def test_reset_of_a_machine_that_is_off_powers_it_on(bmc: SimBmc) -> None:
    outcome = run(bmc.target(), "power", "reset")
    assert outcome.ok and outcome.result == "was off: powered on", outcome.message
    assert bmc.power
    assert told(bmc) == [("power", "1")]


def test_reset_of_a_machine_that_is_on_resets_it(ipmi_sim: StartBmc) -> None:
    bmc = ipmi_sim(power=True)
    outcome = run(bmc.target(), "power", "reset")
    assert outcome.ok and outcome.result == "reset", outcome.message
    assert told(bmc) == [("reset", "1")]


@pytest.mark.parametrize("power", [False, True], ids=["off", "on"])
def test_netboot_sets_pxe_for_the_next_boot_then_starts_the_machine(ipmi_sim: StartBmc, power: bool) -> None:
    bmc = ipmi_sim(power=power)
    outcome = run(bmc.target(), "power", "netboot")
    start = ("reset", "1") if power else ("power", "1")
    assert outcome.ok, outcome.message
    assert outcome.result == f"boot device pxe (next boot only), then {'reset' if power else 'was off: powered on'}"
    assert told(bmc) == [("boot", "pxe"), start]
    # One read of the power state, then the control: nothing asked twice.
    assert [call for _, call in bmc.calls()] == ["set boot pxe", "get power", f"set {' '.join(start)}"]
    assert bmc.power
    assert ipmitool_boot(bmc) == BootSetting(BootDevice.PXE, persistent=False)


def test_operations_one_after_another_on_one_bmc(bmc: SimBmc) -> None:
    """Each operation has its own driver, logged out when done; the next logs in afresh."""
    for action, argument, persistent, result in [
        ("bootdev", "pxe", False, "pxe (next boot only)"),
        ("power", "on", False, "powered on"),
        ("power", "status", False, "on"),
        ("bootdev", "status", False, "pxe (next boot only)"),
        ("power", "off", False, "powered off"),
    ]:
        outcome = run(bmc.target(), action, argument, persistent)
        assert outcome.ok and outcome.result == result, outcome.message
        assert outcome.attempts == (2 if action == "power" and argument != "status" else 1), outcome.message
    assert told(bmc) == [("boot", "pxe"), ("power", "1"), ("power", "0")]


@pytest.mark.parametrize("network", [{"drop": 0.3, "seed": 3}, {"delay": 0.4}], ids=["30% lost", "slow"])
def test_operations_succeed_over_a_poor_link(bmc: SimBmc, network: dict[str, Any]) -> None:
    """Lost datagrams cost retransmissions and whole new attempts, late ones duplicates;
    the operations still succeed within the budget."""
    policy = Policy(min_gap=0.05, budget=40.0, backoff=0.5)
    with UdpRelay(bmc.port, **network) as relay:
        target = bmc.target(port=relay.port)
        for action, argument, result in [("power", "on", "powered on"), ("bootdev", "pxe", "pxe (next boot only)")]:
            started = time.monotonic()
            outcome = run(target, action, argument, policy=policy)
            assert outcome.ok and outcome.result == result, outcome.message
            assert time.monotonic() - started < policy.budget, outcome.message
    assert bmc.power and bmc.boot == "pxe"
    assert relay.forwarded > 0 and (relay.dropped > 0) == ("drop" in network)


def test_a_bmc_that_did_not_answer_is_reached_once_it_answers(bmc: SimBmc) -> None:
    """A failed login must not leave pyghmi a dead session that later drivers get back."""
    with UdpRelay(bmc.port, drop=1.0) as relay:
        target = bmc.target(port=relay.port)
        with pytest.raises(Unreachable):
            driver(target).power_status()
        relay.drop = 0.0
        outcome = run(target, "power", "on")
    assert outcome.ok and outcome.result == "powered on", outcome.message
    assert outcome.attempts == 2


def test_one_driver_closing_leaves_another_on_the_same_bmc_working(bmc: SimBmc) -> None:
    """pyghmi gives both drivers the same session: the first one's close must not log it out."""
    first, second = driver(bmc.target()), driver(bmc.target())
    try:
        assert first.power_status() == Power.OFF
        assert second.power_status() == Power.OFF
        first.close()
        second.power_on()
        assert second.power_status() == Power.ON
    finally:
        second.close()
    assert told(bmc) == [("power", "1")]


def test_a_dead_bmc_times_out_within_the_budget() -> None:
    target = Target(serial="SIM0404", type="ipmi", address="127.0.0.1", port=free_udp_port(),
                    user="admin", password="secret")
    policy = Policy(min_gap=0.05, budget=3.0, backoff=0.5)
    started = time.monotonic()
    with pytest.raises(Unreachable) as failure:
        Runner(driver(target), Pacer(policy.min_gap), policy).power("on")
    took = time.monotonic() - started
    assert took < policy.budget + 8  # the budget and at most one more pyghmi login
    message = str(failure.value)
    assert target.bmc in message and "host SIM0404" in message and "power status" in message
    assert "no answer from the BMC" in message and "gave up after" in message


def test_a_wrong_password_fails_the_operation_without_retries(bmc: SimBmc) -> None:
    started = time.monotonic()
    outcome = run(bmc.target(password="not-the-password"), "power", "on")
    assert not outcome.ok and outcome.attempts == 1
    assert f"BMC {bmc.target().bmc}" in outcome.message and "refused" in outcome.message
    assert time.monotonic() - started < 3
    assert told(bmc) == []


# --------------------------------------------------------------------------- pacing


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    call: str


#: The driver calls the Runner makes (power_boot makes two of its own, back to back).
CALLS = ("power_status", "power_on", "power_off", "power_reset", "power_boot", "set_boot_device",
         "get_boot_device")


def timed(ipmi: IpmiDriver, spans: list[Span], lock: threading.Lock) -> IpmiDriver:
    """``ipmi`` with the start and end of each call the Runner makes appended to ``spans``
    (calls a driver call makes itself are part of it)."""
    depth = threading.local()
    for name in CALLS:
        setattr(ipmi, name, _timing(getattr(ipmi, name), name, spans, lock, depth))
    return ipmi


def test_pacer_keeps_two_threads_apart_on_one_bmc(bmc: SimBmc) -> None:
    """Two workers on the same BMC: their calls never overlap and keep the minimum gap,
    in the driver (spans) and at the BMC (the chassis' record)."""
    policy = Policy(min_gap=0.3, budget=30.0, backoff=0.2)
    pacer = Pacer(policy.min_gap)
    spans: list[Span] = []
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    ready = threading.Barrier(2)

    def worker(operations: list[tuple[str, str]]) -> None:
        ready.wait()
        for action, argument in operations:
            ipmi = timed(driver(bmc.target()), spans, lock)
            outcomes.append(carry_out(ipmi, pacer, policy, action, argument, False, f"{action} {argument}"))

    threads = [threading.Thread(target=worker, args=([("bootdev", "pxe"), ("power", "reset"), ("power", "off")],)),
               threading.Thread(target=worker, args=([("power", "on"), ("bootdev", "disk"), ("power", "status")],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(outcome.ok for outcome in outcomes), [outcome.message for outcome in outcomes]
    assert len(outcomes) == 6
    spans.sort(key=lambda span: span.start)
    for before, after in zip(spans, spans[1:]):
        assert after.start - before.end >= policy.min_gap - 0.01, (before, after)
    assert_apart([action.time for action in bmc.actions()], policy.min_gap)


def assert_apart(times: list[float], gap: float) -> None:
    assert len(times) >= 4, times
    for before, after in zip(times, times[1:]):
        assert after - before >= gap - 0.02, times


# --------------------------------------------------------------------------- helpers


def record_raw_commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every (netfn, command, data) pyghmi sends through Command.raw_command."""
    from pyghmi.ipmi.command import Command

    sent: list[tuple[int, int, tuple[int, ...]]] = []
    original = Command.raw_command

    def raw_command(self: Command, netfn: int, command: int, *args: Any, **kwargs: Any) -> Any:
        sent.append((netfn, command, tuple(kwargs.get("data", ()))))
        return original(self, netfn, command, *args, **kwargs)

    monkeypatch.setattr(Command, "raw_command", raw_command)
    return sent


class _Answers:
    """Stands in for a pyghmi Command that gives one fixed answer."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def raw_command(self, **_: Any) -> dict[str, Any]:
        return self.answer


def _timing(call: Callable[..., Any], name: str, spans: list[Span], lock: threading.Lock,
            depth: threading.local) -> Callable[..., Any]:
    def timed_call(*args: Any, **kwargs: Any) -> Any:
        outermost = not getattr(depth, "inside", False)
        depth.inside = True
        start = time.monotonic()
        try:
            return call(*args, **kwargs)
        finally:
            end = time.monotonic()
            if outermost:
                depth.inside = False
                with lock:
                    spans.append(Span(start, end, name))
    return timed_call


def test_a_wait_for_an_answer_already_filed_does_not_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyghmi's lost wake-up: the answer was filed in the session's packet
    queue before the thread registered its wait; it must not sleep on it."""
    from pyghmi.ipmi.private import session as pyghmi_session

    from provisiond.power import ipmi

    address = ("192.0.2.1", 623)
    filed = type("FiledSession", (), {"pktqueue": [b"an answer"]})()
    monkeypatch.setitem(pyghmi_session.Session.bmc_handlers, address, {40000: filed})
    monkeypatch.setattr(ipmi, "IO_WAIT_SLICE", 3600.0)  # were it to sleep, the join below would give up
    waiter = threading.Thread(target=pyghmi_session._io_wait, args=(3600.0, address), daemon=True)
    waiter.start()
    waiter.join(timeout=10)
    assert not waiter.is_alive()

