"""The small-data protocol: no validation split on few cases, the last epoch's weights, said in results."""
import json

import pytest
import torch

import hybridseq as hs
from hybridseq import ConfigError
from hybridseq.blocks.layers import TimeEncoding
from hybridseq.data import load_data
from hybridseq.data.core import MIN_VAL_CASES, val_fraction
from hybridseq.train.trainer import train

from test_train import tiny_config


@pytest.mark.parametrize("option,n,expected", [(None, 100, 0.0), (None, 5 * MIN_VAL_CASES, 0.2),
                                               (0.2, 10, 0.2), (0.0, 1000, 0.0)])
def test_automatic_validation_share(option, n, expected):
    assert val_fraction(option, n) == expected


def test_small_data_has_no_validation_split_by_default():
    spirals = {"name": "spirals", "n_train": 40, "n_test": 8, "points": 10}
    assert len(load_data(spirals).val) == 0
    assert len(load_data({**spirals, "n_train": 200}).val) == 40
    assert len(load_data({**spirals, "val_fraction": 0.25}).val) == 10


def test_without_validation_the_last_epoch_is_scored_and_said_so(tmp_path):
    cfg = tiny_config(epochs=3)
    cfg["data"]["val_fraction"] = None
    results = train(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["selection"] == "last_epoch" and saved["val_cases"] == 0 and saved["monitor"] is None
    assert saved["best_epoch"] == 3 and results["test_accuracy"] == saved["test_accuracy"]
    assert not any(k.startswith("val_") and k != "val_cases" for k in saved)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
    assert set(saved["curves"]) == {"train_loss"}


def test_last_epoch_weights_are_the_ones_saved(tmp_path):
    """`evaluate` of the run scores exactly what training scored (best.safetensors holds the last epoch)."""
    from hybridseq.train.evaluate import evaluate_run

    cfg = tiny_config(epochs=2, select="last")
    results = train(cfg, tmp_path / "run")
    assert results["selection"] == "last_epoch" and results["best_epoch"] == 2
    again = evaluate_run(tmp_path / "run", split="test")
    assert again["accuracy"] == pytest.approx(results["test_accuracy"])


def test_with_validation_the_best_epoch_is_selected(tmp_path):
    results = train(tiny_config(epochs=3), tmp_path / "run")
    assert results["selection"] == "best_val" and results["val_cases"] == 8
    assert results["monitor"] == "val_accuracy" and 1 <= results["best_epoch"] <= 3


@pytest.mark.parametrize("over,key", [({"select": "best"}, "train.select"), ({"patience": 2}, "train.patience")])
def test_selection_that_needs_validation_is_an_error_without_it(tmp_path, over, key):
    cfg = tiny_config(**over)
    cfg["data"]["val_fraction"] = 0.0
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path / "run")
    assert err.value.path == key and "validation split" in str(err.value)


# -- time encoding ---------------------------------------------------------------------------------
def test_time_encoding_resolves_one_step_of_a_long_series():
    """Points 1/1000 of the span apart get clearly different codes; the span is covered by slow ones."""
    enc = TimeEncoding(16, max_freq=1000.0)
    t = torch.linspace(0, 1, 1001)
    z = enc(t).detach()                                            # [1001, 16]
    assert z.shape == (1001, 16)
    step = (z[1:] - z[:-1]).abs().amax(-1)                        # largest feature change per step
    assert step.min() > 0.5
    assert enc.freq.max().item() == pytest.approx(1000.0) and enc.freq.min().item() == pytest.approx(0.1, rel=1e-4)
    assert torch.allclose(z[:, 2], torch.cos(enc.freq[1].detach() * t), atol=1e-3)   # sine/cosine pairs


def test_fixed_time_encoding_has_no_parameters_to_train():
    enc = TimeEncoding(8, learned=False)
    assert [n for n, _ in enc.named_parameters()] == ["lin.weight", "lin.bias"]
    assert {n for n, _ in enc.named_buffers()} == {"freq", "phase"}


def pulse_data(n, seed, length=24):
    """One pulse per series at a random observation; the label says whether it comes before t = 0.5."""
    g = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(n, length, generator=g), 1).values
    where = torch.randint(0, length, (n,), generator=g)
    values = torch.zeros(n, length, 1)
    values[torch.arange(n), where, 0] = 1.0
    label = (times[torch.arange(n), where] > 0.5).long()
    batch = hs.IrregularBatch(values=values, times=times, mask=torch.ones(n, length, 1, dtype=torch.bool),
                              lengths=torch.full((n,), length))
    return batch, label


@pytest.mark.parametrize("time,learns", [("add", True), ("concat", True), ("none", False)])
def test_transformer_behind_linear_encoder_learns_order(time, learns):
    """Every series holds the same values; only when the pulse comes tells the classes apart, so a model
    without a time input (permutation-invariant) stays at chance."""
    model = hs.assemble({"d_model": 16, "input": {"kind": "irregular", "channels": 1},
                         "encoder": {"type": "linear", "time": time},
                         "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify", "classes": 2}})
    (x, y), (xt, yt) = pulse_data(256, 0), pulse_data(256, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x).x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(xt).x.argmax(-1) == yt).float().mean().item()
    assert (accuracy > 0.9) if learns else (accuracy < 0.62)


@pytest.mark.parametrize("encoder,key", [
    ({"time_features": 8}, "model.encoder.time_features"),                     # read only under concat
    ({"time": "concat", "time_features": 0}, "model.encoder.time_features"),
    ({"time": "sum"}, "model.encoder.time"),
])
def test_linear_encoder_time_options_are_checked(encoder, key):
    with pytest.raises(ConfigError) as err:
        hs.validate_model({"d_model": 8, "input": {"kind": "irregular", "channels": 1},
                           "encoder": {"type": "linear", **encoder}, "head": {"type": "classify", "classes": 2}})
    assert err.value.path == key


def test_linear_encoder_adds_a_stream_wide_time_encoding():
    """Under `add` the values' projection sees only values and mask; the time encoding has the
    stream's width and is added, so two series that differ only in their times differ by exactly the
    difference of their encodings."""
    enc = hs.build_block("linear", d_in=2, d_model=8)
    assert enc.proj.in_features == 4 and enc.time(torch.zeros(1)).shape == (1, 8)
    values, mask = torch.randn(1, 5, 2), torch.ones(1, 5, 2, dtype=torch.bool)
    t1, t2 = torch.linspace(0, 1, 5)[None], torch.linspace(0, 0.5, 5)[None]
    y1 = enc(hs.IrregularBatch(values=values, times=t1, mask=mask, lengths=torch.tensor([5]))).x
    y2 = enc(hs.IrregularBatch(values=values, times=t2, mask=mask, lengths=torch.tensor([5]))).x
    torch.testing.assert_close(y1 - y2, enc.time(t1) - enc.time(t2))
