"""Which epoch's weights a run keeps, and when it stops: `EarlyStopping`."""
from __future__ import annotations


class EarlyStopping:
    """Follows the monitored validation metric epoch by epoch.

    ``select="best"`` keeps the weights of the best epoch (``higher`` says which way is better) and stops
    after ``patience`` epochs without improvement (never when ``patience`` is None); ``select="last"``
    keeps every epoch's weights in turn (the rule without a validation split). Its state is plain data,
    saved with the resumable training state.
    """

    def __init__(self, monitor: str, higher: bool, select: str, patience: int | None):
        self.key, self.higher, self.select, self.patience = f"val_{monitor}", higher, select, patience
        self.best, self.best_epoch, self.bad_epochs, self.stopped = None, None, 0, False

    def step(self, epoch: int, record: dict) -> bool:
        """Take epoch ``epoch``'s record; whether its weights become the selected ones."""
        if self.select == "last":
            improved = True
        else:
            score = record[self.key]
            improved = self.best is None or (score > self.best if self.higher else score < self.best)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = record.get(self.key), epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = bool(self.patience and self.bad_epochs >= self.patience)
        return improved

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.stopped = state["bad_epochs"], state["stopped"]
