"""Training, evaluation and checkpoints.

``train(cfg, run_dir)`` trains a config into a resumable run directory and returns its results;
``evaluate_run(run_dir)`` scores a saved run; the learning tasks are registered in `hybridseq.tasks`. See docs/training.md.
"""
from ..config import compose
from .checkpoint import load_run, save_run
from .config import TrainConfig, train_config
from .evaluate import evaluate, evaluate_run
from ..tasks import Task
from .trainer import Trainer, train

__all__ = ["Task", "TrainConfig", "Trainer", "compose", "evaluate", "evaluate_run", "load_run",
           "save_run", "train", "train_config"]
