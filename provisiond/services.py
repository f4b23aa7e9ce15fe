"""The long-lived objects of one provisiond process, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from provisiond.config import Settings
from provisiond.db import Database
from provisiond.kickstart.composer import Composer
from provisiond.kickstart.profiles import ProfileStore
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
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.settings.profiles_dir)

    @cached_property
    def composer(self) -> Composer:
        return Composer(self.settings.fragments_dir, self.profiles, self.settings.variables)
