"""CLI sub-commands ``blocks``, ``plugins``, ``validate`` and ``describe`` (registered through the commands hook)."""
from __future__ import annotations

import dataclasses
import json

from .. import plugins, registry
from ..hookspecs import hookimpl


def _schema(cls) -> list[dict]:
    rows = []
    for f in dataclasses.fields(cls.Config):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "???"
        if dataclasses.is_dataclass(default):
            default = dataclasses.asdict(default)
        typename = getattr(f.type, "__name__", None) or str(f.type)
        rows.append({"key": f.name, "type": typename, "default": default,
                     "choices": list(f.metadata.get("choices", ())) or None})
    return rows


def _fmt_default(value) -> str:
    return "required" if value == "???" else json.dumps(value, default=str)


def cmd_blocks(args) -> int:
    names = [args.name] if args.name else registry.blocks.names()
    info = []
    for name in names:
        entry = registry.blocks.entry(name, "name")
        info.append({"name": name, "plugin": entry.owner, "accepts": entry.obj.accepts,
                     "produces": entry.obj.produces, "doc": (entry.obj.__module__ or ""),
                     "schema": _schema(entry.obj)})
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for b in info:
        print(f"{b['name']}  [{b['accepts']} -> {b['produces']}]  (plugin: {b['plugin']})")
        for row in b["schema"]:
            choices = f"  one of {row['choices']}" if row["choices"] else ""
            print(f"    {row['key']}: {row['type']} = {_fmt_default(row['default'])}{choices}")
    return 0


def cmd_plugins(args) -> int:
    plugins.load()
    rows = [i.as_dict() for i in plugins.infos.values() if args.all or not i.builtin]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no third-party plugins installed (use --all to list the built-in ones too)")
    for r in rows:
        kind = "built-in" if r["builtin"] else "entry point"
        print(f"{r['name']} {r['version'] or ''} ({kind})")
        for what, names in r["registered"].items():
            print(f"    {what}: {', '.join(names)}")
        for err in r["errors"]:
            print(f"    error: {err}")
    return 0


def _prepare(args, build: bool):
    """The command's config composed from its files and overrides, prepared as training prepares it."""
    from ..config import compose, split_args
    from ..train.prepare import prepare

    files, overrides = split_args(args.overrides)
    return prepare(compose([args.config, *files], overrides), build=build)


def cmd_validate(args) -> int:
    checked = _prepare(args, build=False).checked
    print(f"{args.config}: OK ({', '.join(checked)} valid)")
    return 0


def cmd_describe(args) -> int:
    from ..assemble import describe

    model = _prepare(args, build=True).model
    if args.forward:
        import torch

        from ..testing import example_input

        first = model.spec.nodes[0]
        with torch.no_grad():
            model.eval()(example_input(first.cls, first.cfg, length=args.forward))
    print(describe(model))
    return 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("blocks", help="list registered blocks with their config schema")
    p.add_argument("name", nargs="?", help="show only this block").completer = lambda prefix: registry.blocks.names()
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_blocks)

    p = cli.add_parser("plugins", help="list plugins, their versions and what they registered")
    p.add_argument("--all", action="store_true", help="include the built-in plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    for name, func, text in (("validate", cmd_validate, "check a config and report the first mistake"),
                             ("describe", cmd_describe, "assemble a config and print its per-node table")):
        p = cli.add_parser(name, help=text)
        p.add_argument("config", help="YAML config file")
        p.add_argument("overrides", nargs="*", help="more YAML files (a later model section replaces the "
                       "earlier one: EXPERIMENT.yaml MODEL.yaml) and dotlist overrides: a.b=c, +a.new=1, ~a.b")
        p.set_defaults(func=func)
    p.add_argument("--forward", type=int, metavar="L", default=0,
                   help="run one forward pass on a random batch of length L to report NFE")
