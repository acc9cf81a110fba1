"""``hybridseq configs [list | show NAME | copy NAME DEST]``: the configs shipped with the package
(`hybridseq.shipped`), so an installed wheel has the experiments, models and sweeps of the repository."""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import shipped
from ..errors import ConfigError
from ..hookspecs import hookimpl


def _first_line(path: Path) -> str:
    """The file's opening comment, as its one-line description."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def _includes(path: Path) -> list[Path]:
    """The files ``path`` includes (``defaults:`` of a config, ``base:`` of a sweep), transitively."""
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    found = []
    for key in ("defaults", "base"):
        names = raw.get(key) or []
        for name in [names] if isinstance(names, str) else names if isinstance(names, list) else []:
            if isinstance(name, str):
                child = (path.parent / name).resolve()
                found += [child, *_includes(child)]
    return found


def _copy(name: str, dest: str, force: bool) -> list[Path]:
    """Copy ``name`` to ``dest``: a file name, or a folder to copy into. A config that includes others (a
    sweep's ``base:``, an experiment's ``defaults:``) goes into the folder ``dest`` with them, laid out as
    in the package, so the copy runs as it is. Nothing is overwritten unless ``force``."""
    source = shipped.get(name)
    target = Path(dest)
    files = list(dict.fromkeys([source, *_includes(source)]))
    if target.is_dir() or dest.endswith(("/", "\\")) or len(files) > 1:
        plan = {f: target / f.relative_to(shipped.ROOT) for f in files}
    else:
        plan = {source: target}
    taken = [str(t) for t in plan.values() if t.exists() or t.is_symlink()]
    if taken and not force:
        raise ConfigError("DEST", f"{', '.join(taken)} already exists; choose another place or pass --force")
    for src, dst in plan.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink():
            dst.unlink()                                  # replace the link itself, never write through it
        shutil.copyfile(src, dst)
    return list(plan.values())


def cmd_configs(args) -> int:
    if args.action == "list":
        if args.name is not None or args.dest is not None:
            raise ConfigError("list", "takes no further arguments")
        names = shipped.names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {_first_line(shipped.ROOT / f'{name}.yaml')}")
        return 0
    if args.name is None:
        raise ConfigError(args.action, "needs the NAME of a shipped config (see `hybridseq configs list`)")
    if args.action == "show":
        print(shipped.get(args.name).read_text(encoding="utf-8"), end="")
        return 0
    if args.dest is None:
        raise ConfigError("copy", "needs a DEST file or folder: hybridseq configs copy NAME DEST")
    for path in _copy(args.name, args.dest, args.force):
        print(f"wrote {path}")
    return 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("configs", help="list, show or copy the configs shipped with hybridseq")
    p.add_argument("action", nargs="?", choices=("list", "show", "copy"), default="list")
    p.add_argument("name", nargs="?", help="a shipped config: experiments/japanese_vowels or japanese_vowels"
                   ).completer = lambda prefix: shipped.names()
    p.add_argument("dest", nargs="?", help="for copy: the file or folder to copy into")
    p.add_argument("--force", action="store_true", help="for copy: overwrite files that exist")
    p.set_defaults(func=cmd_configs)
