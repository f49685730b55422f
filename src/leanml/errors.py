"""Errors that users can act on.

Every error leanml raises on purpose is a :class:`LeanMLError`; the CLI prints its message and exits with
status 2 instead of showing a traceback. Messages name the offending field, value and row where known.
"""

from __future__ import annotations


class LeanMLError(Exception):
    """Base class of errors whose message is meant for the user."""


class ConfigError(LeanMLError):
    """The configuration is invalid; the message names the key path and what is allowed."""


class DataError(LeanMLError):
    """The data cannot be used as configured; the message names the column and the problem."""


class StateError(LeanMLError):
    """A saved preprocessing state (or other artifact) cannot be loaded."""


def require_format_version(
    payload: object, supported: int, source: str, error: type[LeanMLError] = StateError
) -> int:
    """The ``format_version`` of a stored JSON document, refusing a missing one or one newer than
    ``supported`` with a message that names ``source`` and says to upgrade."""
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise error(f"{source}: missing 'format_version'")
    if version > supported:
        raise error(
            f"{source}: format version {version} is newer than this leanml understands ({supported}); "
            f"upgrade leanml to load it"
        )
    return version
