"""A fake BMC for the demo and tests: its state is a JSON file per host under
``<data_dir>/fake-bmc/``, so another process (a test, ``provctl``) can see
what the "BMC" was told. An address of ``unreachable`` makes every call time
out; a password of ``wrong`` is refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from provisiond.power.base import (
    AuthFailed, BootDevice, BootSetting, Power, PowerDriver, Unreachable,
)


class FakeDriver(PowerDriver):
    name = "fake"

    @property
    def path(self) -> Path:
        return Path(self.options.state_dir) / f"{self.target.serial}.json"

    def _load(self, operation: str) -> dict[str, Any]:
        if self.target.address == "unreachable":
            raise Unreachable(self.target, operation, "no answer (fake BMC marked unreachable)")
        if self.target.password == "wrong":
            raise AuthFailed(self.target, operation, "the BMC refused the password (fake)")
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {"power": "off", "bootdev": "default", "persistent": False, "actions": []}

    def _save(self, state: dict[str, Any], action: str) -> None:
        state["actions"] = [*state.get("actions", []), {"time": time.time(), "action": action, "pid": os.getpid()}]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.path)

    def _set(self, action: str, **changes: Any) -> None:
        state = self._load(action)
        state.update(changes)
        self._save(state, action)

    def power_status(self) -> Power:
        return Power(self._load("power status")["power"])

    def power_on(self) -> None:
        self._set("power on", power="on")

    def power_off(self) -> None:
        self._set("power off", power="off")

    def power_reset(self) -> None:
        self._set("power reset", power="on")

    def set_boot_device(self, device: BootDevice, persistent: bool) -> None:
        self._set(f"bootdev {device}{' persistent' if persistent else ''}", bootdev=str(device),
                  persistent=persistent)

    def get_boot_device(self) -> BootSetting:
        state = self._load("get boot device")
        return BootSetting(BootDevice(state["bootdev"]), bool(state["persistent"]))
