import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Fixed seed; one intra-op thread, since tiny tensors gain nothing from more and contend on 2 cores."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
