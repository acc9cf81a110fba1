"""A notice on stderr for a step that runs longer than a user would wait without a word (a plugin slow to
import, say). A leaf: it imports nothing of the package."""
from __future__ import annotations

import contextlib
import sys
import threading

SLOW_IMPORT_S = 2.0           # a plugin import taking longer than this is named on stderr


@contextlib.contextmanager
def slow_notice(what: str, after_s: float = SLOW_IMPORT_S):
    """Say on stderr that ``what`` is still running once it has taken ``after_s`` seconds."""
    timer = threading.Timer(after_s, lambda: print(f"hybridseq: {what} is taking more than {after_s:.0f} s "
                                                   f"(set HYBRIDSEQ_LOAD_PLUGINS to skip it)", file=sys.stderr,
                                                   flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
