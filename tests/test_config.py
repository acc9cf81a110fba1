import pytest

import hybridseq as hs
from hybridseq import ConfigError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_base_compose_relative_files(tmp_path):
    write(tmp_path / "models" / "base.yaml", "model: {d_model: 32, blocks: [{type: mlp}]}\ntrain: {lr: 0.1}\n")
    write(tmp_path / "models" / "wide.yaml", "base: base.yaml\nmodel: {d_model: 64}\n")
    exp = write(tmp_path / "exp" / "x.yaml", "defaults: [../models/wide.yaml]\ntrain: {epochs: 3}\n")
    cfg = hs.load_config(exp)
    assert cfg.model.d_model == 64 and cfg.model.blocks[0].type == "mlp"
    assert cfg.train.lr == 0.1 and cfg.train.epochs == 3
    assert "defaults" not in cfg and "base" not in cfg


def test_later_files_win_and_interpolation_resolves(tmp_path):
    a = write(tmp_path / "a.yaml", "model: {d_model: 8, head: {hidden: '${model.d_model}'}}\n")
    b = write(tmp_path / "b.yaml", "model: {d_model: 24}\n")
    cfg = hs.load_config([a, b])
    assert cfg.model.head.hidden == 24


def test_dotlist_set_add_remove_and_list_index():
    cfg = hs.load_config({"model": {"d_model": 8, "blocks": [{"type": "mlp"}, {"type": "transformer"}]}},
                         ["model.blocks[1].heads=2", "+model.new=[1, 2]", "~model.blocks[0]", "train.lr=1e-3",
                          "model.d_model=16"])
    assert cfg.model.blocks[0].type == "transformer" and cfg.model.blocks[0].heads == 2
    assert list(cfg.model.new) == [1, 2] and cfg.model.d_model == 16
    assert cfg.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("override, path", [
    ("model.blocks[5].type=mlp", "model.blocks[5]"),
    ("~model.nope", "model.nope"),
    ("+model.d_model=3", "model.d_model"),
])
def test_bad_overrides_name_the_key(override, path):
    with pytest.raises(ConfigError) as err:
        hs.load_config({"model": {"d_model": 8, "blocks": [{"type": "mlp"}]}}, [override])
    assert err.value.path == path


def test_missing_and_circular_includes(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        hs.load_config(write(tmp_path / "x.yaml", "base: missing.yaml\n"))
    write(tmp_path / "p.yaml", "base: q.yaml\n")
    with pytest.raises(ConfigError, match="circular include"):
        hs.load_config(write(tmp_path / "q.yaml", "base: p.yaml\n"))
