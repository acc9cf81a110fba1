"""The ``hybridseq`` command: parses and dispatches. Every sub-command, built-in (`hybridseq.commands`) or a
plugin's, is added through the ``hybridseq_register_commands`` hook."""
from __future__ import annotations

import argparse
import sys
import warnings

from . import boundary, plugins
from ._version import __version__

DESCRIPTION = "Declare hybrid sequence models in YAML and swap their blocks freely."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridseq", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"hybridseq {__version__}")
    parser.add_argument(boundary.TRACEBACK_FLAG, action="store_true",
                        help=f"on an error, print the full stack too (or set {boundary.TRACEBACK_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    plugins.call_commands_hook(sub)
    return parser


def main(argv=None) -> int:
    warnings.simplefilter("default")
    show_traceback, argv = boundary.wants_traceback(sys.argv[1:] if argv is None else list(argv))
    with boundary.plugin_output_to_stderr():
        parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                          # overrides given after options: `ablate S.yaml --workers 2 a.b=1`
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return boundary.run(lambda: args.func(args), show_traceback)


if __name__ == "__main__":
    sys.exit(main())
