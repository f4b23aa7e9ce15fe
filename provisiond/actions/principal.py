"""Who acts: an API credential, a console user, an agent, provisiond itself."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(str, enum.Enum):
    """What a principal may do; each role may do what the ones before it may."""

    VIEWER = "viewer"  # read
    OPERATOR = "operator"  # hosts, installs, power (and jobs)
    ADMIN = "admin"  # everything: credentials, users, settings

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Principal:
    kind: str  # token, user, agent, system
    name: str
    role: Role

    def __str__(self) -> str:
        """As events, logs and the audit trail name it: ``token ops``."""
        return f"{self.kind} {self.name}"


#: provisiond acting on its own (the reaper, imports at first start).
SYSTEM = Principal("system", "provisiond", Role.ADMIN)
