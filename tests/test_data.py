"""The data layer: load_data / DataSplits / collate, the irregular protocol, options and errors, spirals."""
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from hybridseq import ConfigError, registry
from hybridseq.data import collate, load_data
from hybridseq.data.archive import EMBEDDED_DIR, OPTIONAL_PACKAGES, embedded_names
from hybridseq.data.transforms import drop_channels, drop_points, sample

INSTALLED = [p for p in OPTIONAL_PACKAGES if importlib.util.find_spec(p) is not None]
SPIRALS = {"name": "spirals", "n_train": 24, "n_test": 8, "points": 20, "queries": 5, "val_fraction": 0.2}


def test_builtin_datasets_registered():
    assert {"uea", "spirals"} <= set(registry.datasets.names())
    assert registry.datasets.entry("uea").owner == "hybridseq.data"


def test_shipped_uea_loads_as_classification():
    bm = load_data({"name": "uea", "dataset": "BasicMotions", "val_fraction": 0.0})
    assert (len(bm.train), len(bm.val), len(bm.test)) == (40, 0, 40)
    assert (bm.info.channels, bm.info.classes, bm.info.max_len, bm.info.task) == (6, 4, 100, "classify")
    jv = load_data({"name": "uea", "dataset": "japanesevowels", "val_fraction": 0.2})
    assert (len(jv.train) + len(jv.val), len(jv.test)) == (270, 370)
    assert (jv.info.channels, jv.info.classes, jv.info.max_len) == (12, 9, 29)
    assert {int(s["label"]) for s in jv.test} == set(range(9))


def test_val_split_is_seeded_and_stratified():
    a = load_data({"name": "uea", "dataset": "BasicMotions", "val_fraction": 0.3, "seed": 3})
    b = load_data({"name": "uea", "dataset": "BasicMotions", "val_fraction": 0.3, "seed": 3})
    c = load_data({"name": "uea", "dataset": "BasicMotions", "val_fraction": 0.3, "seed": 4})
    labels = torch.stack([s["label"] for s in a.val])
    assert len(a.val) == 12 and torch.bincount(labels).tolist() == [3, 3, 3, 3]      # 10 per class in train
    assert all(torch.equal(x["values"], y["values"]) for x, y in zip(a.val, b.val))
    assert not all(torch.equal(x["values"], y["values"]) for x, y in zip(a.val, c.val))


@pytest.mark.parametrize("drop", [0.3, 0.5, 0.7])
def test_drop_protocol_fraction_and_reproducibility(drop):
    cfg = {"name": "uea", "dataset": "BasicMotions", "val_fraction": 0.0, "irregular": {"drop": drop, "seed": 1}}
    a, b = load_data(cfg), load_data(cfg)
    keep = round(100 * (1 - drop))
    assert all(s["times"].shape[0] == keep for s in list(a.train) + list(a.test))
    assert all(torch.equal(x["times"], y["times"]) and torch.equal(x["values"], y["values"])
               for x, y in zip(a.train, b.train))
    other = load_data({**cfg, "irregular": {"drop": drop, "seed": 2}})
    assert not all(torch.equal(x["times"], y["times"]) for x, y in zip(a.train, other.train))
    assert all((s["times"].diff() > 0).all() for s in a.train)                      # kept points stay in order


def test_drop_points_keeps_original_rows():
    values = torch.arange(20.0).view(10, 2)
    s = sample(values, torch.arange(10.0), label=torch.tensor(1))
    out = drop_points(s, 0.5, torch.Generator().manual_seed(0))
    rows = out["times"].long()
    assert rows.shape == (5,) and torch.equal(out["values"], values[rows]) and out["label"] == 1


def test_channel_drop_hides_entries_at_the_rate_asked():
    s = sample(torch.randn(400, 5), torch.arange(400.0))
    out = drop_channels(s, 0.3, torch.Generator().manual_seed(0))
    rate = 1 - out["mask"].sum().item() / 2000
    assert 0.26 < rate < 0.34
    assert out["mask"].any(1).all()                                      # emptied time points are removed
    assert (out["values"][~out["mask"]] == 0).all()


def test_missing_values_become_mask_false():
    values = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")], [2.0, 3.0]])
    s = sample(values, torch.tensor([0.0, 1.0, 2.0]))
    assert s["times"].tolist() == [0.0, 2.0]                             # the all-missing row goes
    assert s["mask"].tolist() == [[True, False], [True, True]] and s["values"][0, 1] == 0


def test_time_normalisation_and_standardisation_use_train():
    d = load_data({"name": "uea", "dataset": "JapaneseVowels", "irregular": {"channel_drop": 0.2}})
    times = torch.cat([s["times"] for s in d.train])
    assert times.min() == 0.0 and times.max() == 1.0
    values = torch.cat([s["values"] for s in d.train])
    mask = torch.cat([s["mask"] for s in d.train])
    for c in range(values.shape[1]):
        observed = values[mask[:, c], c]
        assert abs(observed.mean()) < 1e-4 and abs(observed.std(unbiased=False) - 1) < 1e-4
    raw = load_data({"name": "uea", "dataset": "JapaneseVowels", "normalise_time": False, "standardise": False})
    assert torch.cat([s["times"] for s in raw.train]).max() == 25.0                     # train lengths are 7..26


def test_collate_pads_and_stacks():
    d = load_data({"name": "uea", "dataset": "JapaneseVowels", "val_fraction": 0.0})
    samples = [d.train[i] for i in (0, 5, 9)]
    batch, targets = collate(samples)
    n = max(s["times"].shape[0] for s in samples)
    assert batch.values.shape == (3, n, 12) and batch.mask.shape == (3, n, 12) and batch.times.shape == (3, n)
    assert batch.lengths.tolist() == [s["times"].shape[0] for s in samples]
    pad = ~batch.valid
    assert not batch.mask[pad].any() and (batch.values[pad] == 0).all()
    assert (batch.times.diff(dim=1) >= 0).all()                          # padding repeats the last time
    assert torch.equal(targets["label"], torch.stack([s["label"] for s in samples]))
    assert batch.query_times is None


@pytest.mark.parametrize("task", ["classify", "regress", "interpolate", "extrapolate"])
def test_spirals_tasks(task):
    d = load_data({**SPIRALS, "task": task})
    assert (len(d.train), len(d.val), len(d.test), d.info.channels, d.info.task) == (19, 5, 8, 2, task)
    batch, targets = next(iter(d.loader("train", batch_size=4)))
    assert batch.values.shape == (4, 20, 2)
    if task == "classify":
        assert d.info.classes == 2 and targets["label"].shape == (4,)
    elif task == "regress":
        assert d.info.outputs == 2 and targets["target"].shape == (4, 2)
    else:
        assert batch.query_times.shape == (4, 5) and targets["query_values"].shape == (4, 5, 2)
        assert targets["query_mask"].all()
    if task == "extrapolate":
        assert (batch.query_times.min(1).values > batch.times.max(1).values - 1e-6).all()


def test_spirals_directions_differ_and_generation_is_seeded():
    a, b = load_data({**SPIRALS, "seed": 5}), load_data({**SPIRALS, "seed": 5})
    assert all(torch.equal(x["values"], y["values"]) for x, y in zip(a.test, b.test))
    for s in a.test:                           # the sign of the cross product gives the direction of rotation
        p = s["values"] * 1.0
        cross = p[:-1, 0] * p[1:, 1] - p[:-1, 1] * p[1:, 0]
        assert (cross.median() > 0) == bool(s["label"])


def test_path_loads_users_files(tmp_path):
    for f in (EMBEDDED_DIR / "BasicMotions").glob("*.ts"):
        shutil.copy(f, tmp_path / f.name)
    by_folder = load_data({"name": "uea", "path": str(tmp_path)})
    by_file = load_data({"name": "uea", "path": str(tmp_path / "BasicMotions_TRAIN.ts")})
    assert by_folder.info.name == by_file.info.name == "BasicMotions" and len(by_file.test) == 40
    (tmp_path / "BasicMotions_TEST.ts").unlink()
    with pytest.raises(ConfigError, match="BasicMotions_TEST.ts") as err:
        load_data({"name": "uea", "path": str(tmp_path)})
    assert err.value.path == "data.path"


def test_config_errors_name_the_key_path():
    with pytest.raises(ConfigError, match="did you mean 'spirals'") as err:
        load_data({"name": "spiral"})
    assert err.value.path == "data.name" and "uea" in err.value.choices
    with pytest.raises(ConfigError, match="batchsize") as err:
        load_data({"name": "spirals", "batchsize": 4})
    assert err.value.path == "data.batchsize"
    with pytest.raises(ConfigError) as err:
        load_data({"name": "spirals", "irregular": {"drop": 1.5}})
    assert err.value.path == "data.irregular.drop"
    with pytest.raises(ConfigError, match="interpolate") as err:
        load_data({"name": "spirals", "task": "interpolation"})
    assert err.value.path == "data.task"
    with pytest.raises(ConfigError, match="missing data section"):
        load_data(None)
    with pytest.raises(ConfigError) as err:
        load_data({"name": "uea"})
    assert err.value.path == "data.dataset" and "JapaneseVowels" in err.value.choices


def test_unknown_uea_problem_says_how_to_get_it(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r'pip install "hybridseq\[datasets\]"') as err:
        load_data({"name": "uea", "dataset": "Epilepsy"})
    assert err.value.path == "data.dataset"


def test_uea_problem_found_in_an_optional_package_cache(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util

    folder = tmp_path / "aeon" / "datasets" / "local_data" / "Motions2"
    folder.mkdir(parents=True)
    for f in (EMBEDDED_DIR / "BasicMotions").glob("*.ts"):
        shutil.copy(f, folder / f.name.replace("BasicMotions", "Motions2"))
    spec = importlib.machinery.ModuleSpec("aeon", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "aeon")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "aeon" else None)
    assert len(load_data({"name": "uea", "dataset": "Motions2"}).test) == 40
    with pytest.raises(ConfigError, match="never downloads") as err:
        load_data({"name": "uea", "dataset": "Epilepsy"})
    assert "load_classification" in str(err.value) and "f('Epilepsy')" in str(err.value)


def _cases(ts_file: Path) -> int:
    """Number of data lines of a .ts file, counted independently of the reader."""
    lines = [line.strip() for line in ts_file.read_text(errors="replace").splitlines()]
    start = next(i for i, line in enumerate(lines) if line.lower() == "@data")
    return sum(1 for line in lines[start + 1:] if line and not line.startswith(("#", "%")))


@pytest.mark.skipif(not INSTALLED, reason="neither aeon nor sktime is installed")
def test_problem_loads_by_name_from_an_installed_aeon_or_sktime():
    root = Path(next(iter(importlib.util.find_spec(INSTALLED[0]).submodule_search_locations))) / "datasets"
    shipped = {n.lower() for n in embedded_names()}
    pairs = sorted((f.stat().st_size, f) for f in root.rglob("*_TRAIN.ts")
                   if f.with_name(f.name.replace("_TRAIN.ts", "_TEST.ts")).exists()
                   and f.name[: -len("_TRAIN.ts")].lower() not in shipped)
    if not pairs:
        pytest.skip(f"{INSTALLED[0]} holds no problem with both files beyond the shipped ones")
    train = pairs[0][1]
    data = load_data({"name": "uea", "dataset": train.name[: -len("_TRAIN.ts")], "val_fraction": 0.0})
    assert (len(data.train), len(data.test)) == (_cases(train), _cases(train.with_name(
        train.name.replace("_TRAIN.ts", "_TEST.ts"))))


def test_a_package_problem_without_its_test_file_names_the_dataset_key(tmp_path, monkeypatch):
    import importlib.machinery

    folder = tmp_path / "sktime" / "datasets" / "data" / "Lonely"
    folder.mkdir(parents=True)
    shutil.copy(EMBEDDED_DIR / "BasicMotions" / "BasicMotions_TRAIN.ts", folder / "Lonely_TRAIN.ts")
    spec = importlib.machinery.ModuleSpec("sktime", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "sktime")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "sktime" else None)
    with pytest.raises(ConfigError, match="no partner file Lonely_TEST.ts") as err:
        load_data({"name": "uea", "dataset": "Lonely"})
    assert err.value.path == "data.dataset"
