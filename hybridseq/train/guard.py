"""What keeps a run from going silently wrong: a non-finite loss stops training with an error that names
the epoch, the step and the setting most likely at fault; a run directory is claimed before anything is
written into it (a marker file, a lock held while the run lives, leftovers of killed writes removed).
"""
from __future__ import annotations

import atexit
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError, TrainingError
from ..io import atomic_write_text, remove_stale_temps

MARKER_FILE = ".hybridseq-run"       # marks a folder as a hybridseq run directory
LOCK_FILE = ".lock"                  # held (flock) by the process training into the folder
_HELD: dict[Path, object] = {}       # folder -> open lock file, for the folders this process holds
atexit.register(lambda: [handle.close() for handle in _HELD.values()])


def _finite(value) -> bool:
    tensors = [value] if isinstance(value, Tensor) else [v for v in vars(value).values() if isinstance(v, Tensor)] \
        if hasattr(value, "__dataclass_fields__") else []
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@torch.no_grad()
def _first_bad_node(model, batch) -> tuple[str, str] | None:
    """(key path, type) of the first node whose output is non-finite on ``batch``, or None."""
    outputs: dict[str, bool] = {}

    def record(name):
        def hook(_module, _inputs, out) -> None:
            outputs.setdefault(name, _finite(out))
        return hook

    hooks = [block.register_forward_hook(record(name)) for name, block in model.nodes.items()]
    try:
        model(batch)
    except Exception:                 # the error is reported as it is; this only looks for a culprit
        pass
    finally:
        for h in hooks:
            h.remove()
    for node in model.spec.nodes:
        if outputs.get(node.name) is False:
            return node.path, node.type
    return None


def check_loss(loss: Tensor, model, batch, targets: dict, epoch: int, step: int) -> float:
    """The loss as a float; a non-finite loss raises `TrainingError` naming the likely key."""
    value = float(loss.detach())
    if math.isfinite(value):
        return value
    where = f"the loss is {value} at epoch {epoch}, step {step}"
    if not all(_finite(p) for p in model.parameters()):
        raise TrainingError("train.lr", f"{where}: the weights became non-finite, so training diverged; lower "
                            "train.lr or set train.grad_clip (e.g. 1.0)")
    if not _finite(batch) or not all(_finite(t) for t in targets.values()):
        raise TrainingError("data", f"{where}: the batch holds non-finite values or targets")
    bad = _first_bad_node(model, batch)
    if bad is not None and epoch == 1 and step == 1:           # untrained weights: the block's settings
        raise TrainingError(bad[0], f"{where}: block '{bad[1]}' produced non-finite output from finite input "
                            "(check its settings, e.g. time_unit, time, steps, or its solver)")
    if bad is not None:
        raise TrainingError("train.lr", f"{where}: block '{bad[1]}' at {bad[0]} produced non-finite output after "
                            "training steps, so the weights have likely diverged; lower train.lr or set "
                            "train.grad_clip (e.g. 1.0), or check that block's settings")
    raise TrainingError("train.lr", f"{where}: the model's outputs are finite but too large for the loss, so the "
                        "weights are diverging; lower train.lr or set train.grad_clip (e.g. 1.0)")


def _non_run_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name != MARKER_FILE)


def is_run_dir(run_dir: Path) -> bool:
    """Marked as a run (or sweep) directory, or written before the marker existed: a resumable state and
    config, or a sweep's file and results."""
    from .checkpoint import RunDir

    def both(a: str, b: str) -> bool:
        return (run_dir / a).is_file() and (run_dir / b).is_file()

    return (run_dir / MARKER_FILE).is_file() or both(RunDir.STATE, RunDir.CONFIG) or both("sweep.yaml", "results.jsonl")


def claim_run_dir(run_dir, *, force: bool = False):
    """Make ``run_dir`` a run directory this process owns, or raise `ConfigError` at ``--out``.

    A folder that is neither empty nor marked as a run directory holds the user's own files: refused
    unless ``force``. A folder another live process trains into is refused. Returns the open lock file
    (keep it open for the run's life; the lock goes when the process ends, however it ends)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError("--out", f"{run_dir} is a file, not a folder; choose a folder for the run")
    if run_dir.is_symlink():
        raise ConfigError("--out", f"{run_dir} is a symbolic link; give the folder it points to")
    if run_dir.is_dir() and not is_run_dir(run_dir) and _non_run_files(run_dir) and not force:
        shown = ", ".join(_non_run_files(run_dir)[:5])
        raise ConfigError("--out", f"{run_dir} is not empty ({shown}) and is not a hybridseq run directory; "
                          "choose an empty or new folder, or pass --force to write into it anyway")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(run_dir)
    if not (run_dir / MARKER_FILE).is_file():
        atomic_write_text(run_dir / MARKER_FILE, "hybridseq run directory\n")
    remove_stale_temps(run_dir)
    return lock


def _lock(folder: Path):
    """An exclusive, non-blocking lock on ``folder``'s lock file; a live holder is a `ConfigError`. A folder
    this process holds already is granted again (a run resumed in the same process)."""
    try:
        import fcntl
    except ImportError:                # pragma: no cover - Windows: no lock, the rest still applies
        return None
    key = folder.resolve()
    if key in _HELD and not _HELD[key].closed:
        return _HELD[key]
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError("--out", f"{folder} is in use by a live process (pid {holder}); wait for it to end "
                          "or stop it before running into the same folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[key] = handle
    return handle


def exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """In a worker process: exit as soon as process ``parent`` is gone (killed, even with -9), so no
    orphan keeps training and writing into run directories a new sweep resumes."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def release_run_dir(run_dir) -> None:
    """Give up this process's lock on ``run_dir`` (the end of a run)."""
    handle = _HELD.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        handle.close()
