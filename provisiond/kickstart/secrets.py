"""Secret variables: declared ``secret T`` in a profile's
``variable_types``, their values are masked in every answer that shows
variables (hosts, groups, profiles, the merged preview, exports); a write
that sends the mask back (a PUT of what a GET showed, an export imported
again) keeps the stored value. Kickstarts and template files still get the
real value: that is what the variable is for.

A name is secret when any profile declares it so: the same name in two
profiles is one variable in the layers (global, groups, host), so it is
masked everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisiond.kickstart.profiles import ProfileStore

#: What a secret's value is shown as.
MASK = "********"


def names(profiles: ProfileStore) -> frozenset[str]:
    """Every variable name some profile declares secret."""
    return frozenset(name for profile in profiles.all().values()
                     for name, kind in profile.types.items() if kind.secret)


def redact(variables: Mapping[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """The variables with each secret one's value replaced by the mask
    (a null stays null: "not set" is not a secret)."""
    return {name: MASK if name in secret and value is not None else value for name, value in variables.items()}


def keep_masked(sent: Mapping[str, Any], stored: Mapping[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """``sent`` with each secret that carries the mask set back to its
    stored value (dropped when none is stored: the mask is never a value)."""
    kept = dict(sent)
    for name in secret:
        if kept.get(name) == MASK:
            if name in stored:
                kept[name] = stored[name]
            else:
                del kept[name]
    return kept


def unmasked(document: Mapping[str, Any], stored: Mapping[str, Any], secret: frozenset[str]) -> Mapping[str, Any]:
    """A host or group document whose ``variables`` may carry masks, with
    each one kept as ``stored`` (:func:`keep_masked`)."""
    variables = document.get("variables")
    if not secret or not isinstance(variables, Mapping) or MASK not in variables.values():
        return document
    return {**document, "variables": keep_masked(variables, stored, secret)}
