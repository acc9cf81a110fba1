"""The explicit list of top-level config sections; an unknown one is an error with the closest name."""
import pytest

import hybridseq as hs
from hybridseq import registry
from hybridseq.cli import main
from hybridseq.sections import validate_config

from conftest import tiny_model


def test_builtin_sections_are_listed():
    assert registry.sections.names() == ["data", "model", "task", "train"]
    assert registry.sections.entry("model").owner == "hybridseq.sections"


def test_misspelt_section_is_an_error_with_did_you_mean():
    with pytest.raises(hs.ConfigError, match=r"^trian: unknown config section 'trian'; did you mean 'train'\?"):
        validate_config({"model": tiny_model(), "trian": {"epochs": 2}})


def test_sections_are_validated_in_one_place():
    assert validate_config({"model": tiny_model(), "train": {"epochs": 1}, "data": {"name": "spirals"}}) \
        == ["model", "train"]
    with pytest.raises(hs.ConfigError, match="^train.epochs"):
        validate_config({"model": tiny_model(), "train": {"epochs": 0}})
    with pytest.raises(hs.ConfigError, match="^task: unknown task 'clasify'; did you mean 'classify'"):
        validate_config({"model": tiny_model(), "task": "clasify"})


def test_training_refuses_an_unknown_section(tmp_path):
    from hybridseq.train import train

    with pytest.raises(hs.ConfigError, match="did you mean 'train'"):
        train({"model": tiny_model(), "data": {"name": "spirals"}, "trian": {"epochs": 1}})


def test_cli_validate_names_the_unknown_section(tmp_path, capsys):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("model: {d_model: 8, input: {kind: sequence, channels: 2}, blocks: [{type: mlp}]}\n"
                   "modle: {}\n")
    assert main(["validate", str(cfg)]) == 2
    assert "modle: unknown config section 'modle'; did you mean 'model'?" in capsys.readouterr().err
