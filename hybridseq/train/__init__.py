"""Training, evaluation and checkpoints.

``prepare(cfg)`` builds a run (data, task, resolved config, model); ``train(cfg, run_dir)`` trains it into
a resumable run directory (`RunDir`) and returns its results; ``evaluate_run(run_dir)`` scores a saved
run. The learning tasks are registered in `hybridseq.tasks`. See docs/training.md.
"""
from ..config import compose
from ..tasks import Task
from .checkpoint import RunDir, load_run, save_run
from .config import TrainConfig, train_config
from .evaluate import evaluate, evaluate_run
from .prepare import Prepared, prepare
from .stopping import EarlyStopping
from .trainer import Trainer, train

__all__ = ["EarlyStopping", "Prepared", "RunDir", "Task", "TrainConfig", "Trainer", "compose", "evaluate",
           "evaluate_run", "load_run", "prepare", "save_run", "train", "train_config"]
