"""The ``hybridseq`` command: parses and dispatches. Every sub-command, built-in (`hybridseq.commands`) or a
plugin's, is added through the ``hybridseq_register_commands`` hook."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import plugins
from ._version import __version__
from .errors import ConfigError

DESCRIPTION = "Declare hybrid sequence models in YAML and swap their blocks freely."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridseq", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"hybridseq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    plugins.call_commands_hook(sub)
    return parser


def main(argv=None) -> int:
    warnings.simplefilter("default")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                          # overrides given after options: `ablate S.yaml --workers 2 a.b=1`
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"hybridseq: config error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"hybridseq: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:                   # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
