"""Property: any one mutation of any shipped config either validates and trains a step, or raises a
`ConfigError` that names a key. Nothing else: no other exception, no NaN result, no hang."""
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from hybridseq import ConfigError
from hybridseq.config import compose, load_config
from hybridseq.train import train

ROOT = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENT_OF_HEAD = {"classify": "spirals.yaml", "regress": "spirals.yaml", "interpolate": "spirals_interpolate.yaml",
                      "extrapolate": "spirals_extrapolate.yaml", "lm": "selective_copy.yaml",
                      "latent_ode": "spirals_extrapolate.yaml", "autoregressive": "spirals_extrapolate.yaml",
                      "mtand": "spirals_interpolate.yaml"}
SMALL_DATA = ["data.n_train=16", "data.n_test=8", "data.points=12", "data.queries=4"]
GENERATED = ["data.n_train=16", "data.n_test=8"]
SMALL_TOKENS = {"selective_copy": ["data.length=24", "data.tokens=4", *GENERATED],
                "induction_heads": ["data.length=12", *GENERATED],
                "listops": ["data.min_length=4", "data.max_length=40", *GENERATED],
                "stdlib_chars": ["data.length=16", "data.max_chars=2000", "model.encoder.max_len=16"]}
ONE_STEP = ["train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=8", "train.progress=false",
            "train.device=cpu"]
NASTY = [math.nan, math.inf, -math.inf, 1e400, 1e-320, -1, 0, 2**64, True, None, "x", "16:00", "${nope}",
         "${oc.env:HYBRIDSEQ_UNSET_VARIABLE}", [], {}, [1, "a"], {"type": "x"}]


def _small(dataset: str) -> list[str]:
    if dataset in SMALL_TOKENS:
        return SMALL_TOKENS[dataset]
    return SMALL_DATA if dataset == "spirals" else []


def _shipped() -> dict[str, dict]:
    """Every shipped experiment, and every model file on the experiment of its task, made tiny."""
    out = {}
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        out[path.stem] = compose(path, _small(OmegaConf.load(path).data.name) + ONE_STEP)
    for path in sorted((ROOT / "models").glob("*.yaml")):
        head = OmegaConf.load(path).model.head.type
        extra = ["data.task=regress"] if head == "regress" else []
        experiment = ROOT / "experiments" / EXPERIMENT_OF_HEAD[head]
        out[path.stem] = compose([experiment, path], _small(OmegaConf.load(experiment).data.name) + extra + ONE_STEP)
    return {name: OmegaConf.to_container(cfg) for name, cfg in out.items()}


SHIPPED = _shipped()


def _paths(node, prefix=()) -> list[tuple]:
    """Every key path (tuples of keys and list indices) inside ``node``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


def _mutated(cfg: dict, path: tuple, kind: str, value) -> dict:
    import copy

    cfg = copy.deepcopy(cfg)
    *parents, last = path
    node = cfg
    for key in parents:
        node = node[key]
    if kind == "set":
        node[last] = value
    elif kind == "delete":
        del node[last]
    elif kind == "typo" and isinstance(node, dict):
        node[str(last)[::-1] + "x"] = node.pop(last)
    elif kind == "extra" and isinstance(node, dict):
        node["unexpected_key"] = value
    return cfg


@st.composite
def mutations(draw):
    name = draw(st.sampled_from(sorted(SHIPPED)))
    path = draw(st.sampled_from(_paths(SHIPPED[name])))
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "typo", "extra"]))
    return name, path, kind, draw(st.sampled_from(NASTY))


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutations())
def test_a_mutated_shipped_config_trains_or_names_the_key(mutation):
    name, path, kind, value = mutation
    cfg = _mutated(SHIPPED[name], path, kind, value)
    try:
        results = train(load_config(cfg))
    except ConfigError as err:
        assert err.path, f"{name} {kind} {path}={value!r}: error names no key: {err}"
        return
    assert math.isfinite(results["curves"]["train_loss"][0]), f"{name} {kind} {path}={value!r}"
