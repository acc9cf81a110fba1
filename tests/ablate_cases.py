"""The tiny sweep the ablation tests share: spirals, a one-block model, one epoch (about a second a run)."""
BASE = {
    "data": {"name": "spirals", "n_train": 30, "n_test": 8, "points": 10, "batch_size": 16},
    "model": {"d_model": 8, "encoder": {"type": "linear"},
              "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify"}},
    "train": {"epochs": 1, "progress": False},
}
TWO_BY_TWO = {"variants": {"transformer": [], "mlp": ["model.blocks[0]={type: mlp}"]}, "seeds": [0, 1]}


def sweep(**over) -> dict:
    return {"name": "t", "base": BASE, **over}
