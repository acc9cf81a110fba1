import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model(**over):
    """A small valid `model:` section as a dict."""
    model = {
        "d_model": 16,
        "input": {"kind": "irregular", "channels": 3},
        "encoder": {"type": "linear"},
        "blocks": [{"type": "transformer", "heads": 2}],
        "head": {"type": "classify", "classes": 4},
    }
    model.update(over)
    return model
