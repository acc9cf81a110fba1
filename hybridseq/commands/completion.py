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

from ..hookspecs import hookimpl

FILES = ":files"
SHELLS = ("bash", "zsh", "fish")
HIDDEN = "__complete"
CONFIG_COMMANDS = ("train", "validate", "describe", "config")      # CONFIG [MORE.yaml] [k=v ...]
BOOLS = ("true", "false")

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

    cut = max(prefix.rfind("."), prefix.rfind("["), prefix.rfind("]"))
    head, partial = prefix[: cut + 1], prefix[cut + 1:]
    parts = _split(head)
    fields, is_block = _schema(parts, cfg)
    node = _node(cfg, parts)
    present = [str(i) for i in range(len(node))] if isinstance(node, list) else list(node or {}) \
        if isinstance(node, dict) else []
    names = list(dict.fromkeys([*fields, *present, *(("type", "name", "repeat", "inputs", "merge") if is_block
                                                       else ())]))
    if not parts:
        names = list(dict.fromkeys([*registry.sections.names(), *present]))
    out = []
    for name in names:
        if not name.startswith(partial):
            continue
        value = _node(cfg, [*parts, name])
        field = fields.get(name)
        mapping = (isinstance(value, (dict, list)) or (isinstance(field, dataclasses.Field) and _nested(field))
                   or (not parts and name in ("model", "data", "train")) or (parts == ["model"] and name in
                                                                             ("input", "encoder", "blocks", "head")))
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


def _config_of(words: list[str]):
    """The composed config of the YAML files among ``words`` (unresolved, as plain data), or {}."""
    from omegaconf import OmegaConf

    from ..config import compose

    files = [w for w in words if w.endswith((".yaml", ".yml")) or ("=" not in w and not w.startswith("-"))]
    try:
        return OmegaConf.to_container(compose(files), resolve=False) if files else {}
    except Exception:                   # a half-typed command line: no keys from the file, still the schema's
        return {}


# -- the completer --------------------------------------------------------------------------------------

def _options(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings]


def _positionals(parser) -> list:
    return [a for a in parser._actions if not a.option_strings and a.dest != "help"]


def candidates(commands: dict, words: list[str]) -> list[str]:
    """What may replace the last of ``words`` (the command line after ``hybridseq``)."""
    from .. import registry, shipped

    *done, cur = words or [""]
    if not done:
        names = [n for n in commands if not n.startswith("_")]
        return [n for n in [*names, "--help", "--version", "--traceback"] if n.startswith(cur)]
    command, rest = done[0], done[1:]
    parser = commands.get(command)
    if parser is None:
        return []
    if cur.startswith("-"):
        return [o for o in _options(parser) if o.startswith(cur)]
    takes_value = {s for a in parser._actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    if rest and rest[-1] in takes_value:
        return [FILES]
    args = [w for i, w in enumerate(rest) if not w.startswith("-") and not (i and rest[i - 1] in takes_value)]
    if command == "completion":
        return [s for s in SHELLS if s.startswith(cur)] if not args else []
    if command == "blocks":
        return [n for n in registry.blocks.names() if n.startswith(cur)] if not args else []
    if command == "configs":
        if not args:
            return [a for a in ("list", "show", "copy") if a.startswith(cur)]
        return [n for n in shipped.names() if n.startswith(cur)] if len(args) == 1 and args[0] != "list" else \
            [FILES] if args[0] == "copy" else []
    shipped_names = [n for n in shipped.names() if n.startswith(cur)]
    if command == "ablate" and not args:
        return [n for n in shipped_names if n.startswith("sweeps/")] + [FILES]
    if command not in CONFIG_COMMANDS and not any(a.dest == "overrides" for a in _positionals(parser)):
        return [FILES]
    if command in CONFIG_COMMANDS and not args:
        return shipped_names + [FILES]
    cfg = _config_of(args) if command in CONFIG_COMMANDS else {}
    key, sign, value = cur.lstrip("+~").partition("=")
    signs = cur[: len(cur) - len(cur.lstrip("+~"))]
    if sign:
        return [signs + c for c in _values(key, value, cfg)]
    return [signs + c for c in _keys(key, cfg)] + ([FILES] if not signs and "." not in cur else [])


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

