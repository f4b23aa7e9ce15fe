"""The long-lived objects of one provisiond process, built once from settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

from provisiond.config import Settings
from provisiond.db import Database
from provisiond.install.hooks import HookRunner
from provisiond.install.lifecycle import Lifecycle
from provisiond.install.slots import Limits
from provisiond.kickstart.composer import Composer
from provisiond.kickstart.guard import VariableGuard
from provisiond.kickstart.profiles import ProfileStore
from provisiond.agents.download import AgentBundle
from provisiond.bell import Bell
from provisiond.jobs import parking
from provisiond.agents.admission import Admission
from provisiond.vault import Vault


@dataclass
class Services:
    settings: Settings
    db: Database

    @classmethod
    def build(cls, settings: Settings) -> Services:
        return cls(settings=settings, db=Database(settings.effective_database_url))

    @cached_property
    def vault(self) -> Vault:
        return Vault(self.settings.secret_key_file)

    @cached_property
    def power_bell(self) -> Bell:
        """Rung after a commit that queued power operations: wakes the power
        workers (:mod:`provisiond.bell`)."""
        return Bell(self.settings.run_dir, "power", self.db)

    @cached_property
    def jobs_bell(self) -> Bell:
        """Rung after a commit that queued job runs, with their agents' ids:
        wakes those agents' parked polls (:mod:`provisiond.jobs.parking`)."""
        return Bell(self.settings.run_dir, parking.BELL_NAME, self.db)

    @cached_property
    def parking(self) -> parking.Parking:
        """This process's parked agent polls (the gateway's)."""
        return parking.Parking(self.jobs_bell)

    @cached_property
    def admission(self) -> Admission:
        """How many agent calls work on the database at once in this process."""
        return Admission()

    @cached_property
    def agent_bundle(self) -> AgentBundle:
        """The agent program served to installs (built on first use)."""
        return AgentBundle(self.settings.data_dir / "agent")

    @cached_property
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.settings.profile_dirs)

    @cached_property
    def composer(self) -> Composer:
        return Composer(self.settings.fragment_dirs, self.profiles, self.settings.variables, agent=self.agent_bundle)

    @cached_property
    def guard(self) -> VariableGuard:
        """Refuses writes that would give a host a variable its profile refuses."""
        return VariableGuard(self.profiles, self.settings.variables)

    @cached_property
    def hooks(self) -> HookRunner:
        return HookRunner(self.settings.hooks_dir, self.settings.hook_timeout_seconds, self.db,
                          self.settings.hook_attempts)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        s = self.settings
        return Lifecycle(
            vault=self.vault,
            hooks=self.hooks,
            limits=Limits(cap=s.install_cap, retry_seconds=s.slot_retry_seconds, stale_seconds=s.queue_stale_seconds),
            arm_ttl=dt.timedelta(seconds=s.arm_ttl_seconds),
            install_timeout=dt.timedelta(seconds=s.install_timeout_seconds),
            power_bell=self.power_bell,
        )
