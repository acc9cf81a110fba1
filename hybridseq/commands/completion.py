"""``hybridseq completion bash|zsh|fish``: a shell completion script. The script is static; what it offers
comes from the hidden ``hybridseq __complete WORD...`` (the words after ``hybridseq``, the last one being
the word under the cursor, after ``--``), which prints one candidate per line: sub-commands, options, registered
block / solver / dataset names (plugins' included), shipped configs, and config keys read from the
schemas and from the config file already on the command line. A line ``:files`` asks the shell to offer
file names too.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ..hookspecs import hookimpl

FILES = ":files"
SHELLS = ("bash", "zsh", "fish")
HIDDEN = "__complete"
BOOLS = ("true", "false")
MAPPINGS = {(): ("model", "data", "train"), ("model",): ("input", "encoder", "blocks", "head")}   # end with '.'

BASH = r"""# hybridseq completion for bash: eval "$(hybridseq completion bash)" (e.g. in ~/.bashrc)
_hybridseq_complete() {
    local line=${COMP_LINE:0:COMP_POINT} cur=${COMP_WORDS[COMP_CWORD]} word
    local -a words
    read -r -a words <<< "$line"
    [[ $line == *" " ]] && words+=("")
    local full=${words[${#words[@]}-1]} files=0
    local -a found=()
    while IFS= read -r word; do
        if [[ $word == ":files" ]]; then files=1; else found+=("$word"); fi
    done < <(hybridseq __complete -- "${words[@]:1}" 2>/dev/null)
    local strip=${full%"$cur"}
    COMPREPLY=("${found[@]#"$strip"}")
    if ((files)); then
        local f
        while IFS= read -r f; do COMPREPLY+=("$f"); done < <(compgen -f -- "$cur")
    fi
    if ((${#COMPREPLY[@]} == 1)) && [[ ${COMPREPLY[0]} == *[.=] ]]; then compopt -o nospace 2>/dev/null; fi
    return 0
}
complete -o filenames -F _hybridseq_complete hybridseq
"""

ZSH = r"""#compdef hybridseq
# hybridseq completion for zsh: eval "$(hybridseq completion zsh)" (after compinit, e.g. in ~/.zshrc)
_hybridseq() {
    local -a found more
    local word files=0
    for word in "${(@f)$(hybridseq __complete -- "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
        if [[ $word == ":files" ]]; then files=1
        elif [[ $word == *[.=] ]]; then more+=("$word")
        elif [[ -n $word ]]; then found+=("$word"); fi
    done
    (( ${#found} )) && compadd -a found
    (( ${#more} )) && compadd -S '' -a more
    (( files )) && _files
    return 0
}
compdef _hybridseq hybridseq
"""

FISH = r"""# hybridseq completion for fish: hybridseq completion fish > ~/.config/fish/completions/hybridseq.fish
function __hybridseq_complete
    set -l words (commandline -opc) (commandline -ct)
    for word in (hybridseq __complete -- $words[2..-1] 2>/dev/null)
        if test "$word" = ":files"
            __fish_complete_path (commandline -ct)
        else
            echo $word
        end
    end
end
complete -c hybridseq -f -a '(__hybridseq_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


# -- config keys ----------------------------------------------------------------------------------------

def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _nested(field: dataclasses.Field):
    """The dataclass a field's default is (a block's ``solver:``), else None."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    return type(value) if dataclasses.is_dataclass(value) else None


def _node(cfg, parts: list[str]):
    """The composed config's value at ``parts`` (list items by index), or None."""
    for part in parts:
        if isinstance(cfg, dict):
            cfg = cfg.get(part)
        elif isinstance(cfg, list) and part.isdigit() and int(part) < len(cfg):
            cfg = cfg[int(part)]
        else:
            return None
    return cfg


def _schema(parts: list[str], cfg) -> tuple[dict[str, dataclasses.Field], bool]:
    """The fields the key ``parts`` may hold, and whether it is a block (so takes the structural keys)."""
    from .. import registry
    from ..spec import MODEL_KEYS
    from ..train.config import TrainConfig

    if parts == ["train"]:
        return _fields(TrainConfig), False
    if parts == ["model"]:
        return {k: None for k in MODEL_KEYS}, False
    is_block = parts[:1] == ["model"] and (parts[1:] in (["encoder"], ["head"]) or
                                           (len(parts) == 3 and parts[1] == "blocks" and parts[2].isdigit()))
    if is_block:
        node = _node(cfg, parts)
        name = node.get("type") if isinstance(node, dict) else None
        cls = registry.blocks.get(name) if isinstance(name, str) and name in registry.blocks else None
        hidden = {"d_model", "d_in"}                                  # injected by the assembler
        return {k: f for k, f in _fields(getattr(cls, "Config", None)).items() if k not in hidden}, True
    if len(parts) >= 2:                                                # a nested dataclass: solver
        outer, _ = _schema(parts[:-1], cfg)
        field = outer.get(parts[-1])
        inner = _nested(field) if isinstance(field, dataclasses.Field) else None
        if inner is not None:
            return _fields(inner), False
    return {}, False


def _split(key: str) -> list[str]:
    return [p for p in re.split(r"[.\[\]]+", key) if p]


def _keys(prefix: str, cfg) -> list[str]:
    """Completions of a partial key ``prefix`` (``train.``, ``model.blocks.0.st``): mappings end with a
    dot, settable keys with ``=``."""
    from .. import registry
    from ..spec import STRUCTURAL

    cut = max(prefix.rfind("."), prefix.rfind("["), prefix.rfind("]"))
    head, partial = prefix[: cut + 1], prefix[cut + 1:]
    parts = _split(head)
    fields, is_block = _schema(parts, cfg)
    node = _node(cfg, parts)
    present = [str(i) for i in range(len(node))] if isinstance(node, list) else list(node) \
        if isinstance(node, dict) else []
    schema = registry.sections.names() if not parts else [*fields, *(STRUCTURAL if is_block else ())]
    out = []
    for name in dict.fromkeys([*schema, *present]):
        if not name.startswith(partial):
            continue
        field = fields.get(name)
        mapping = (isinstance(_node(cfg, [*parts, name]), (dict, list)) or name in MAPPINGS.get(tuple(parts), ())
                   or (isinstance(field, dataclasses.Field) and _nested(field) is not None))
        out.append(f"{head}{name}{'.' if mapping else '='}")
    return out


def _values(key: str, partial: str, cfg) -> list[str]:
    """Values for ``key=``: registered names where the key selects one, a field's choices, booleans."""
    from .. import registry
    from ..spec import INPUT_KINDS, MERGES

    parts = _split(key)
    leaf = parts[-1] if parts else ""
    if leaf == "type" and parts[:1] == ["model"]:
        values = registry.blocks.names()
    elif leaf == "method":
        values = registry.solvers.names()
    elif parts == ["data", "name"]:
        values = registry.datasets.names()
    elif parts == ["task"]:
        values = registry.tasks.names()
    elif parts == ["model", "input", "kind"]:
        values = list(INPUT_KINDS)
    elif leaf == "merge":
        values = list(MERGES)
    else:
        field = _schema(parts[:-1], cfg)[0].get(leaf)
        choices = list(field.metadata.get("choices", ())) if isinstance(field, dataclasses.Field) else []
        values = choices or (list(BOOLS) if isinstance(field, dataclasses.Field) and field.type in (bool, "bool")
                             else [])
    return [f"{key}={v}" for v in values if str(v).startswith(partial)]


def _config_of(args: list[str]):
    """The composed config of the command's positional words that name configs (files, shipped names, a
    run directory's ``config.yaml``), unresolved, as plain data; {} when none loads."""
    from omegaconf import OmegaConf

    from ..config import compose
    from ..train.checkpoint import RunDir

    files = [str(RunDir(w).config) if Path(w).is_dir() else w for w in args if "=" not in w]
    try:
        return OmegaConf.to_container(compose(files), resolve=False) if files else {}
    except Exception:                   # a half-typed command line: no keys from the file, still the schema's
        return {}


# -- the completer --------------------------------------------------------------------------------------

def _options(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def _filling(parser, args: list[str]):
    """The positional argument that the word after ``args`` (the positional words so far) fills."""
    positionals = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    index = len(args)
    for action in positionals:
        if action.nargs in ("*", "+", "..."):
            return action
        if index == 0:
            return action
        index -= 1
    return None


def shipped_configs(prefix: str) -> list[str]:
    """Completer of a config argument: the shipped configs' names (local files come from the shell)."""
    from .. import shipped

    return [*shipped.names(), FILES]


def shipped_sweeps(prefix: str) -> list[str]:
    from .. import shipped

    return [*(n for n in shipped.names() if n.startswith("sweeps/")), FILES]


# positional arguments by their ``dest``, unless the argument carries a ``completer(prefix) -> list`` itself
BY_DEST = {"config": shipped_configs, "sweep": shipped_sweeps}
CONFIG_DESTS = ("config", "overrides", "run_dir")       # positionals whose words hold the config being changed


def _overrides(cur: str, cfg) -> list[str]:
    """A dotlist override being typed: keys, or values after ``=``; ``+``/``++``/``~`` kept in front."""
    bare = cur.lstrip("+~")
    signs = cur[: len(cur) - len(bare)]
    key, sign, value = bare.partition("=")
    if sign:
        return [signs + c for c in _values(key, value, cfg)]
    return [signs + c for c in _keys(key, cfg)] + ([FILES] if not signs and "." not in cur else [])


def candidates(commands: dict, words: list[str]) -> list[str]:
    """What may replace the last of ``words`` (the command line after ``hybridseq``)."""
    *done, cur = words or [""]
    if not done:
        names = [n for n in commands if not n.startswith("_")]
        return [n for n in [*names, "--help", "--version", "--traceback"] if n.startswith(cur)]
    parser = commands.get(done[0])
    rest = done[1:]
    if parser is None:
        return []
    if cur.startswith("-"):
        return [o for o in _options(parser) if o.startswith(cur)]
    takes_value = {s for a in parser._actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    if rest and rest[-1] in takes_value:
        return [FILES]
    args = [w for i, w in enumerate(rest) if not w.startswith("-") and not (i and rest[i - 1] in takes_value)]
    action = _filling(parser, args)
    if action is None:
        return []
    if action.dest == "overrides":
        sources = [w for i, w in enumerate(args) if _filling(parser, args[:i]).dest in CONFIG_DESTS]
        return _overrides(cur, _config_of(sources))
    complete = getattr(action, "completer", None) or BY_DEST.get(action.dest)
    found = list(action.choices) if action.choices else complete(cur) if complete else [FILES]
    return [c for c in found if c == FILES or str(c).startswith(cur)]


def cmd_completion(args) -> int:
    print(SCRIPTS[args.shell], end="")
    return 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("completion", help="print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=cmd_completion)

    def complete(args) -> int:
        for word in candidates(cli.choices, args.words):
            print(word)
        return 0

    p = cli.add_parser(HIDDEN)                         # no help: left out of `hybridseq --help`
    p.add_argument("words", nargs="*")
    p.set_defaults(func=complete)

