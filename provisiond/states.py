"""Host install states, declared in the order of the PXE flow.

The transition table lives here; :mod:`provisiond.install.lifecycle` (the
install-lifecycle issue) will be the only module that applies it. Until then
hosts are created IDLE and the data source only reads the state.
"""

from __future__ import annotations

import enum


class HostState(str, enum.Enum):
    IDLE = "idle"  # in the data source, nothing to do
    ARMED = "armed"  # an install was requested; the next PXE boot installs
    BOOTING = "booting"  # the installer fetched its kickstart
    VERIFYING = "verifying"  # %pre reported hardware; being checked
    QUEUED = "queued"  # waiting for an install slot
    INSTALLING = "installing"  # holds a slot
    INSTALLED = "installed"  # %post reported done; boots from disk from now on
    HANDED_OFF = "handed_off"  # the agent enrolled
    READY = "ready"  # hand-off jobs ran; in service
    FAILED = "failed"  # with a reason: hw_mismatch, timeout, installer_error, cancelled

    def __str__(self) -> str:
        return self.value


#: Which states may follow which. Anything not listed is refused.
TRANSITIONS: dict[HostState, frozenset[HostState]] = {
    HostState.IDLE: frozenset({HostState.ARMED}),
    HostState.ARMED: frozenset({HostState.BOOTING, HostState.FAILED, HostState.IDLE}),
    HostState.BOOTING: frozenset({HostState.VERIFYING, HostState.FAILED}),
    HostState.VERIFYING: frozenset({HostState.QUEUED, HostState.INSTALLING, HostState.FAILED}),
    HostState.QUEUED: frozenset({HostState.INSTALLING, HostState.FAILED}),
    HostState.INSTALLING: frozenset({HostState.INSTALLED, HostState.FAILED}),
    HostState.INSTALLED: frozenset({HostState.HANDED_OFF, HostState.ARMED}),
    HostState.HANDED_OFF: frozenset({HostState.READY, HostState.ARMED}),
    HostState.READY: frozenset({HostState.ARMED}),
    HostState.FAILED: frozenset({HostState.ARMED, HostState.IDLE}),
}


def can_transition(current: HostState, target: HostState) -> bool:
    return target in TRANSITIONS[current]
