"""User-facing errors. Every config mistake becomes a `ConfigError` that names the key path."""
from __future__ import annotations

import difflib
from typing import Iterable


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The registered name closest to ``name``, if any is close enough to suggest."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return matches[0] if matches else None


_SECRETS: set[str] = set()
MIN_SECRET_LEN = 3           # shorter values (1, on, ...) would blank ordinary words if hidden


def add_secret(value: str) -> None:
    """Hide ``value`` (an environment variable's content) from every error message from now on."""
    if len(value) >= MIN_SECRET_LEN:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class ConfigError(ValueError):
    """A configuration mistake: ``path`` is the YAML key path (``model.blocks[2].d_state``)."""

    def __init__(self, path: str, message: str, *, choices: Iterable[str] | None = None, got=None):
        self.path = path
        self.reason = message
        self.choices = sorted({str(c) for c in choices}) if choices is not None else None
        self.got = got
        text = f"{path}: {message}" if path else message
        if self.choices is not None:
            hint = closest(got, self.choices) if got is not None else None
            text += f"; did you mean '{hint}'?" if hint is not None else "."
            text += f" Valid choices: {', '.join(self.choices) or '(none registered)'}"
        super().__init__(redact(text))


class PluginWarning(UserWarning):
    """A plugin failed to load or register; it was skipped and everything else keeps working."""


class TrainingError(ConfigError):
    """Training cannot go on (a non-finite loss, ...); ``path`` is the setting most likely at fault."""
