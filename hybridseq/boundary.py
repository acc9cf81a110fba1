"""The command line's boundaries. Errors: a mistake in a config, a data file or a path is one line on
stderr and exit status 2; anything else is one line naming the error (and the plugin it came from) and
exit status 1. ``--traceback`` (or ``HYBRIDSEQ_TRACEBACK=1``) prints the full stack as well, for bug
reports. Plugins: what they print while loading goes to stderr (stdout stays clean for ``--json``); a
plugin slow to import is named by `hybridseq.notices.slow_notice`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Callable

from .errors import ConfigError, TrainingError, redact

TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "HYBRIDSEQ_TRACEBACK"
USER_ERROR, INTERNAL_ERROR = 2, 1
MAX_UNEXPECTED = 400          # characters of an unexpected error's message shown without --traceback


@contextlib.contextmanager
def plugin_output_to_stderr():
    """Send what plugins print while they load to stderr, so stdout holds only the command's output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _plugin_of(err: BaseException) -> str | None:
    """The third-party plugin whose code raised ``err`` (innermost frame first), if any."""
    from . import plugins, registry

    owners = {}
    for table in registry.KINDS.values():
        for name in table.names():
            entry = table.entry(name)
            info = plugins.infos.get(entry.owner)
            module = getattr(entry.obj, "__module__", None) or ""
            if info is not None and not info.builtin and module.split(".")[0] != "hybridseq":
                owners[module.split(".")[0]] = entry.owner          # the plugin's top-level package
    frames = [f.f_globals.get("__name__", "") for f, _ in traceback.walk_tb(err.__traceback__)]
    for module in reversed(frames):
        if module.split(".")[0] in owners:
            return owners[module.split(".")[0]]
    return None


def wants_traceback(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether to show stacks, ``argv`` without the flag): the flag may come anywhere on the line."""
    env = os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return env or TRACEBACK_FLAG in argv, [a for a in argv if a != TRACEBACK_FLAG]


def _user_error(err: BaseException) -> str | None:
    """The one-line message of an ordinary mistake, or None when ``err`` is not one."""
    from .data.tsfile import TSFormatError

    if isinstance(err, TrainingError):
        return f"training stopped: {err}"
    if isinstance(err, ConfigError):
        return f"config error: {err}"
    if isinstance(err, TSFormatError):
        return f"data file error: {err}"
    if isinstance(err, OSError) and (err.filename or isinstance(err, FileNotFoundError)):
        name = f"{err.filename}: " if err.filename else ""
        return f"{name}{err.strerror or err}"
    if isinstance(err, UnicodeDecodeError):
        return f"cannot decode text as UTF-8: {err.reason} at byte {err.start}"
    return None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " ".join(lines)


def run(command: Callable[[], int], show_traceback: bool) -> int:
    """Run ``command`` and turn what it raises into a message and an exit status."""
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:                   # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if show_traceback:
            traceback.print_exc()
        message = _user_error(err)
        status = USER_ERROR if message is not None else INTERNAL_ERROR
        if message is None:
            text = _one_line(err)
            cut = text if show_traceback or len(text) <= MAX_UNEXPECTED else text[:MAX_UNEXPECTED] + " …"
            owner = _plugin_of(err)
            source = f" in plugin '{owner}'" if owner else ""
            message = f"unexpected error{source} {type(err).__name__}: {cut}"
        hint = "" if show_traceback else f" (run with {TRACEBACK_FLAG} or {TRACEBACK_ENV}=1 for the stack)" \
            if status == INTERNAL_ERROR else ""
        print(f"hybridseq: {redact(_one_line(message))}{hint}", file=sys.stderr)
        return status
