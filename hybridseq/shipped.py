"""The configs shipped inside the package (``hybridseq/configs``; the repository's ``configs/`` is a link to
it), so an installed wheel has them too. A shipped config is named by its path under that folder without
``.yaml`` (``experiments/japanese_vowels``) or by its file stem alone (``japanese_vowels``); the
repository path ``configs/experiments/japanese_vowels.yaml`` names it as well, so commands written for a
clone work from any folder."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import ConfigError

ROOT = Path(__file__).resolve().parent / "configs"
SUFFIXES = (".yaml", ".yml")


def names() -> list[str]:
    """Every shipped config, as ``group/stem`` (sorted)."""
    return sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in ROOT.glob("*/*.yaml"))


def _key(text: str) -> str:
    """``text`` as a shipped name: no leading ``configs/`` or ``./``, no YAML suffix."""
    key = Path(text).as_posix().removeprefix("./").removeprefix("configs/")
    return next((key[: -len(s)] for s in SUFFIXES if key.endswith(s)), key)


def find(name: str) -> Path | None:
    """The shipped file ``name`` refers to, or None; a stem that two groups share is a `ConfigError`."""
    key = _key(str(name))
    every = names()
    if key in every:
        return ROOT / f"{key}.yaml"
    matches = [n for n in every if n.rsplit("/", 1)[-1] == key]
    if len(matches) > 1:
        raise ConfigError(str(name), "names several shipped configs; give the group too", choices=matches)
    return ROOT / f"{matches[0]}.yaml" if matches else None


def locate(path) -> Path:
    """``path`` itself when it exists, else the shipped config it names (said on stderr), else ``path``
    unchanged (so the caller's not-found error names what the user typed)."""
    path = Path(path)
    if path.exists():
        return path
    found = find(str(path))
    if found is None:
        return path
    print(f"hybridseq: no file {path} here; using the shipped config {_key(str(found.relative_to(ROOT)))}",
          file=sys.stderr)
    return found


def get(name: str) -> Path:
    """The shipped file ``name`` refers to; an unknown name is a `ConfigError` listing the shipped ones."""
    found = find(name)
    if found is None:
        raise ConfigError("NAME", f"no shipped config '{name}'", choices=names(), got=_key(name))
    return found
