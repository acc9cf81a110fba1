"""Token input: TokenBatch and its collate, the embedding encoder, the lm head and task, the token
datasets (selective copying, induction heads, ListOps) and their shipped configs."""
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import hybridseq as hs
from hybridseq import ConfigError
from hybridseq.data import collate, load_data
from hybridseq.data.listops import VOCAB
from hybridseq.metrics import IGNORE, TokenMeter
from hybridseq.tasks import get_task
from hybridseq.train.tasks import resolve

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY = {"selective_copy": {"length": 24, "tokens": 4, "n_train": 16, "n_test": 8},
        "induction_heads": {"length": 12, "n_train": 16, "n_test": 8},
        "listops": {"min_length": 4, "max_length": 40, "n_train": 16, "n_test": 8},
        "stdlib_chars": {"length": 16, "max_chars": 2000}}


def lm_model(vocab=7, causal=True, positions="learned"):
    return hs.assemble({"d_model": 8, "input": {"kind": "tokens", "vocab": vocab},
                        "encoder": {"type": "embedding", "positions": positions, "max_len": 16},
                        "blocks": [{"type": "transformer", "heads": 2, "causal": causal}],
                        "head": {"type": "lm", "vocab": vocab}})


def test_collate_pads_tokens_and_ignores_padded_targets():
    samples = [{"tokens": torch.tensor([3, 1, 2]), "next": torch.tensor([1, 2, IGNORE])},
               {"tokens": torch.tensor([4]), "next": torch.tensor([5])}]
    batch, targets = collate(samples)
    assert isinstance(batch, hs.TokenBatch) and batch.tokens.dtype == torch.long
    assert batch.lengths.tolist() == [3, 1] and batch.valid.tolist() == [[True] * 3, [True, False, False]]
    assert targets["next"].tolist() == [[1, 2, IGNORE], [5, IGNORE, IGNORE]]


def test_causal_lm_logits_ignore_later_and_padded_tokens():
    torch.manual_seed(0)
    model = lm_model().eval()
    ids = torch.randint(0, 7, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = (ids[:, 6:] + 1) % 7
    with torch.no_grad():
        a, b = model(ids).x, model(changed).x                                   # [B, L, vocab]
        padded = model(hs.TokenBatch(changed, torch.tensor([6, 6]))).x
    assert a.shape == (2, 10, 7)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    torch.testing.assert_close(padded[:, :6], a[:, :6])


def test_embedding_positions_and_times():
    torch.manual_seed(0)
    ids = torch.tensor([[2, 2, 2, 2]])
    learned = lm_model(positions="learned").nodes["encoder"]
    none = lm_model(positions="none").nodes["encoder"]
    x = learned(hs.TokenBatch(ids, torch.tensor([4]))).x
    assert not torch.allclose(x[0, 0], x[0, 1])                                # positions tell tokens apart
    y = none(hs.TokenBatch(ids, torch.tensor([4]))).x
    torch.testing.assert_close(y[0, 0], y[0, 1])
    timed = lm_model(positions="time").nodes["encoder"]
    t1, t2 = torch.tensor([[0.0, 0.1, 0.2, 0.3]]), torch.tensor([[0.0, 0.5, 0.6, 0.9]])
    z1, z2 = (timed(hs.TokenBatch(ids, torch.tensor([4]), t)).x for t in (t1, t2))
    torch.testing.assert_close(z1[0, 0], z2[0, 0])
    assert not torch.allclose(z1[0, 1], z2[0, 1])                              # the times are read
    with pytest.raises(ValueError, match="max_len"):
        learned(hs.TokenBatch(torch.zeros(1, 17, dtype=torch.long), torch.tensor([17])))


def test_token_input_errors_name_the_key():
    base = {"d_model": 8, "input": {"kind": "tokens", "vocab": 5}, "encoder": {"type": "embedding"},
            "head": {"type": "lm", "vocab": 5}}
    with pytest.raises(ConfigError, match=r"model\.input\.channels: unknown key"):
        hs.validate_model({**base, "input": {"kind": "tokens", "channels": 5}})
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.type: port mismatch.*produces tokens"):
        hs.validate_model({**base, "encoder": None, "blocks": [{"type": "mamba"}]})
    with pytest.raises(TypeError, match="token"):
        hs.assemble(base)(torch.randn(2, 4, 5))
    cfg = OmegaConf.create({"model": {"d_model": 8, "encoder": {"type": "linear"}, "head": {"type": "lm"}}})
    with pytest.raises(ConfigError, match=r"model\.input\.kind.*set kind: tokens"):
        resolve(cfg, load_data({"name": "induction_heads", **TINY["induction_heads"]}).info)


def test_lm_loss_and_metrics_match_hand_computed_values():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4)
    target = torch.tensor([[1, IGNORE, 3], [IGNORE, 0, IGNORE]])
    keep = [(0, 0), (0, 2), (1, 1)]
    nll = [-F.log_softmax(logits[b, i], -1)[target[b, i]] for b, i in keep]
    task = get_task("lm")
    assert task.port == "sequence" and task.width_key == "vocab" and not task.higher_is_better("perplexity")
    loss = task.loss(logits, {"next": target})
    torch.testing.assert_close(loss, torch.stack(nll).mean())
    meter = TokenMeter()
    task.update(meter, logits, {"next": target}, float(loss))
    out = meter.compute()
    mean = float(torch.stack(nll).mean())
    assert out["loss"] == pytest.approx(mean, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(mean), rel=1e-5)
    assert out["bits_per_token"] == pytest.approx(mean / math.log(2), rel=1e-5)
    right = sum(int(logits[b, i].argmax() == target[b, i]) for b, i in keep)
    assert out["accuracy"] == pytest.approx(right / 3)


def test_selective_copy_places_the_tokens_and_answers_in_order():
    opts = {"length": 30, "tokens": 5, "vocab": 8, "n_train": 20, "n_test": 4}
    splits = load_data({"name": "selective_copy", **opts})
    assert splits.info.vocab == 8 and splits.info.task == "lm"
    for s in splits.train:
        tokens, target = s["tokens"], s["next"]
        assert tokens.shape == (35,) and (tokens[30:] == 1).all()
        data = tokens[:30][tokens[:30] >= 2]                                   # data tokens, in order
        assert len(data) == 5 and (data < 8).all() and ((tokens[:30] == 0) | (tokens[:30] >= 2)).all()
        assert target[30:].tolist() == data.tolist() and (target[:30] == IGNORE).all()
    again = load_data({"name": "selective_copy", **opts})
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(splits.test, again.test))
    other = load_data({"name": "selective_copy", **opts, "seed": 1})
    assert not all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(splits.test, other.test))


def test_induction_heads_asks_for_the_token_after_the_trigger():
    splits = load_data({"name": "induction_heads", "length": 20, "vocab": 6, "n_train": 30, "n_test": 4})
    for s in splits.train:
        tokens, target = s["tokens"], s["next"]
        where = (tokens == 0).nonzero().flatten().tolist()
        assert len(where) == 2 and where[1] == 19 and where[0] < 18
        assert target[-1] == tokens[where[0] + 1] and (target[:-1] == IGNORE).all()


def _evaluate(ids: list[int]) -> int:
    """An independent stack evaluator of a ListOps token sequence."""
    ops = {"[MAX": max, "[MIN": min, "[MED": lambda v: int(statistics.median(v)), "[SM": lambda v: sum(v) % 10}
    stack = [[]]
    for word in (VOCAB[i] for i in ids):
        if word in ops:
            stack.append([word])
        elif word == "]":
            op, *args = stack.pop()
            stack[-1].append(ops[op](args))
        else:
            stack[-1].append(int(word))
    (value,) = stack[0]
    return value


def test_listops_labels_are_the_values_and_lengths_stay_in_the_window():
    splits = load_data({"name": "listops", "min_length": 10, "max_length": 60, "n_train": 40, "n_test": 8})
    assert splits.info.classes == 10 and splits.info.vocab == len(VOCAB) == 15
    for s in list(splits.train) + list(splits.test):
        assert 10 <= len(s["tokens"]) <= 60
        assert _evaluate(s["tokens"].tolist()) == s["label"]
    with pytest.raises(ConfigError, match=r"data\.max_length"):
        load_data({"name": "listops", "max_length": 4096})
    with pytest.raises(ConfigError, match=r"data\.irregular\.drop"):
        load_data({"name": "listops", "irregular": {"drop": 0.5}})


def test_every_token_experiment_has_a_tiny_setting():
    """The next test trains each token experiment; one added without a TINY entry would go untested.
    (The long-range sweep's runs are trained by tests/test_bench_long_range.py.)"""
    token = {p.stem for p in (ROOT / "configs" / "experiments").glob("*.yaml")
             if OmegaConf.load(p).model.get("input", {}).get("kind") == "tokens"}
    assert token == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_shipped_token_experiment_trains_one_step(name, tmp_path):
    from hybridseq.train.trainer import train

    path = ROOT / "configs" / "experiments" / f"{name}.yaml"
    tiny = {**{f"data.{k}": v for k, v in TINY[name].items()}, "data.batch_size": 8, "model.d_model": 8,
            "train.epochs": 1, "train.progress": False, "train.max_steps_per_epoch": 1}
    cfg = hs.load_config(str(path), overrides=[f"{k}={v}" for k, v in tiny.items()])
    result = train(cfg, tmp_path)
    metric = "test_perplexity" if name != "listops" else "test_accuracy"
    assert math.isfinite(result[metric]) and math.isfinite(result["test_loss"])
    if name == "stdlib_chars":
        import platform

        assert result["data_source"]["python"] == platform.python_version()


@pytest.mark.parametrize("override, where", [
    ("data.length=1099511627776", r"data\.length"), ("data.max_depth=1000", r"data\.max_depth"),
    ("data.max_args=1", r"data\.max_args"), ("model.encoder.max_len=8", r"model\.encoder\.max_len: is 8 but"),
    ("model.input.vocab=1099511627776", r"model\.input\.vocab")])
def test_sizes_out_of_range_or_short_of_the_data_name_the_key(override, where, tmp_path):
    from hybridseq.train.trainer import train

    name = "selective_copy" if override.startswith("data.length") else "listops"
    tiny = [f"data.{k}={v}" for k, v in TINY[name].items()] + ["train.epochs=1", "train.progress=false"]
    cfg = hs.load_config(str(ROOT / "configs" / "experiments" / f"{name}.yaml"), overrides=tiny + [override])
    with pytest.raises(ConfigError, match=where):
        train(cfg, tmp_path)


def test_stdlib_corpus_is_split_by_file_in_sorted_order():
    import platform
    import sysconfig
    from pathlib import Path

    from hybridseq.data.stdlib_corpus import stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files()
    rel = [p.relative_to(root).as_posix() for p in files]
    assert rel == sorted(rel) and not any("site-packages" in r for r in rel)
    splits = load_data({"name": "stdlib_chars", "length": 16, "max_chars": 4000})
    assert splits.info.vocab == 256 and splits.info.source["python"] == platform.python_version()
    first = files[0].read_bytes()
    s = splits.train[0]
    assert s["tokens"].tolist() == list(first[:16]) and s["next"].tolist() == list(first[1:17])
    assert splits.val[0]["tokens"].tolist() == list(files[18].read_bytes()[:16])     # file 19: validation
    assert splits.test[0]["tokens"].tolist() == list(files[19].read_bytes()[:16])    # file 20: test
    assert len(splits.train) == (4000 - 1) // 17


@pytest.mark.parametrize("block, culprit", [
    ("{type: transformer, heads: 2, causal: false}", r"model\.blocks\[0\] \(transformer\)"),
    ("{type: s4d, d_state: 4, bidirectional: true}", r"model\.blocks\[0\] \(s4d\)")])
def test_lm_refuses_a_model_that_sees_later_tokens(block, culprit, tmp_path):
    """Next-token training through a non-causal block would read the answer; it is stopped before
    training, naming the block; the causal version of the same model trains."""
    from hybridseq.train.trainer import train

    tiny = [f"data.{k}={v}" for k, v in TINY["stdlib_chars"].items()] + [
        "train.epochs=1", "train.progress=false", "train.max_steps_per_epoch=1", "model.d_model=8",
        "data.batch_size=4"]
    path = str(ROOT / "configs" / "experiments" / "stdlib_chars.yaml")
    with pytest.raises(ConfigError, match=r"task: 'lm' predicts the next token.*" + culprit):
        train(hs.load_config(path, overrides=[*tiny, f"model.blocks=[{block}]"]), tmp_path / "bad")
    good = block.replace("causal: false", "causal: true").replace("bidirectional: true", "bidirectional: false")
    assert math.isfinite(train(hs.load_config(path, overrides=[*tiny, f"model.blocks=[{good}]"]),
                               tmp_path / "good")["test_loss"])


def test_a_non_causal_model_may_learn_selective_copying(tmp_path):
    """Markers, not answers, stand at selective copying's answer positions: nothing to read ahead."""
    from hybridseq.train.trainer import train

    tiny = [f"data.{k}={v}" for k, v in TINY["selective_copy"].items()] + [
        "train.epochs=1", "train.progress=false", "train.max_steps_per_epoch=1", "model.d_model=8",
        "model.blocks=[{type: transformer, heads: 2, causal: false}]"]
    cfg = hs.load_config(str(ROOT / "configs" / "experiments" / "selective_copy.yaml"), overrides=tiny)
    assert math.isfinite(train(cfg, tmp_path)["test_loss"])
