"""Generation: stepping every steppable block gives the full pass's logits, sampling is greedy at T = 0 and
reproducible under a seed, blocks without a causal step mode are refused by key path, and `hybridseq
generate` runs on run directories written by `hybridseq train`."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import hybridseq as hs
from hybridseq import registry
from hybridseq.cli import main
from hybridseq.generate import Decoder, generate, sample, steppable_blocks

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
VOCAB, LENGTH = 7, 20                               # LENGTH > CACHE_START: the KV cache grows
CAUSAL = {name: {"causal": True} for name in ("transformer", "ode_transformer", "pde_attention")}   # step modes
IN_EVERY_MODEL = ("embedding", "lm")                # the encoder and head of every model below


def lm_model(blocks, positions="none", d_model=16):
    cfg = {"d_model": d_model, "input": {"kind": "tokens", "vocab": VOCAB},
           "encoder": {"type": "embedding", "positions": positions, "max_len": 32},
           "blocks": blocks, "head": {"type": "lm", "vocab": VOCAB}}
    torch.manual_seed(0)
    return hs.assemble(cfg).to(F64).eval()


def stepped_logits(model, ids):
    decoder = Decoder(model)
    state, outs = decoder.init_state(ids.shape[0]), []
    with torch.no_grad():
        for i in range(ids.shape[1]):
            logits, state = decoder.step(ids[:, i], state)
            outs.append(logits)
    return torch.stack(outs, 1), state                                          # [B, L, V]


def block_entry(name):
    cls = registry.blocks.get(name)
    return {"type": name, **cls.example, **CAUSAL.get(name, {})}


STEPPABLE = [n for n in steppable_blocks() if n not in IN_EVERY_MODEL]


def test_the_steppable_blocks_include_every_ssm_and_attention():
    assert {"s4d", "s4", "mamba", "mamba2", "transformer", "ode_transformer", "pde_attention", "mlp",
            "gru"} <= set(STEPPABLE)
    assert "lru" in STEPPABLE or "lru" not in registry.blocks.names()          # the plugin's, when installed


@pytest.mark.parametrize("name", STEPPABLE)
@pytest.mark.parametrize("positions", ["none", "learned", "time"])
def test_step_by_step_logits_equal_the_full_pass(name, positions):
    model = lm_model([block_entry(name), block_entry(name)], positions)
    ids = torch.randint(0, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).x                                                     # [B, L, V]
    stepped, _ = stepped_logits(model, ids)
    torch.testing.assert_close(stepped, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("over", [{"scheme": "rk4", "rk_norm": True}, {"scheme": "learned_rk2"},
                                  {"scheme": "gated_rk2", "gate": "channel"}, {"scheme": "euler"}])
def test_every_ode_transformer_scheme_steps_like_its_full_pass(over):
    model = lm_model([{"type": "ode_transformer", "causal": True, "heads": 2, "layers": 2, **over}])
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        full = model(ids).x
    torch.testing.assert_close(stepped_logits(model, ids)[0], full, rtol=1e-10, atol=1e-10)


PDE_CASES = [{"target": t, "pde": p, "placement": w} for t, w in (("states", "inside"), ("states", "after"),
                                                                    ("weights", "inside"))
             for p in ("diffusion", "advection_diffusion", "wave", "reaction_diffusion")]
PDE_CASES += [{"target": "weights", "pde": p, "stepper": "spectral"} for p in ("diffusion", "wave")]
PDE_CASES += [{"target": "weights", "boundary": "fixed"}, {"target": "states", "time": 3.0, "steps": 2}]


@pytest.mark.parametrize("over", PDE_CASES)
def test_causal_pde_attention_steps_like_its_full_pass(over):
    """Longer than the state window (substeps + 1 positions) and than the first KV-cache buffer."""
    model = lm_model([{"type": "pde_attention", "causal": True, "heads": 2, **over}])
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        full = model(ids).x
    torch.testing.assert_close(stepped_logits(model, ids)[0], full, rtol=1e-10, atol=1e-10)


def test_a_dag_with_concat_merge_steps_like_its_full_pass():
    model = lm_model([{"name": "a", "type": "mamba"}, {"name": "b", "type": "transformer", "causal": True,
                                                       "inputs": ["encoder"]},
                      {"type": "mlp", "inputs": ["a", "b"], "merge": "concat", "d_out": 16}])
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        full = model(ids).x
    torch.testing.assert_close(stepped_logits(model, ids)[0], full, rtol=1e-10, atol=1e-10)


def test_ssm_state_is_constant_and_the_kv_cache_holds_every_position():
    model = lm_model([{"type": "mamba"}, {"type": "transformer", "causal": True}])
    short = stepped_logits(model, torch.zeros(1, 3, dtype=torch.long))[1]
    long = stepped_logits(model, torch.zeros(1, 40, dtype=torch.long))[1]
    assert {k: v.shape for k, v in short["b0"].items()} == {k: v.shape for k, v in long["b0"].items()}   # mamba
    assert (short["b1"]["length"], long["b1"]["length"]) == (3, 40)             # one key and value per position
    assert 40 <= long["b1"]["k"].shape[2] < 2 * 40 and long["b1"]["v"].shape == long["b1"]["k"].shape


@pytest.mark.parametrize("block,path,words", [
    ({"type": "neural_ode_transformer"}, "model.blocks[1].type",
     "block 'neural_ode_transformer' has no step-by-step mode"),
    ({"type": "ode_transformer"}, "model.blocks[1]", "causal: false attends to later positions"),
    ({"type": "pde_attention"}, "model.blocks[1]", "causal: false lets tokens reach earlier ones"),
    ({"type": "pde_attention", "causal": True, "boundary": "fixed"}, "model.blocks[1]", "boundary: fixed holds"),
    ({"type": "transformer"}, "model.blocks[1]", "causal: false attends to later positions"),
    ({"type": "s4d", "bidirectional": True}, "model.blocks[1]", "bidirectional"),
])
def test_a_block_that_cannot_step_is_refused_by_key_path(block, path, words):
    model = lm_model([{"type": "mamba"}, block])
    with pytest.raises(hs.ConfigError) as err:
        Decoder(model)
    assert err.value.path == path and words in str(err.value)


def test_only_token_models_with_per_position_logits_generate():
    pooled = hs.assemble({"d_model": 8, "input": {"kind": "tokens", "vocab": VOCAB}, "encoder": {"type": "embedding"},
                          "blocks": [{"type": "mamba"}], "head": {"type": "classify", "classes": 2}})
    with pytest.raises(hs.ConfigError, match=r"model.head.type: generation needs logits at every position"):
        Decoder(pooled)
    values = hs.assemble({"d_model": 8, "input": {"kind": "sequence", "channels": 3}, "blocks": [{"type": "mamba"}]})
    with pytest.raises(hs.ConfigError, match=r"model.input.kind: generation needs a model on token input"):
        Decoder(values)


def test_greedy_generation_extends_by_the_argmax_of_the_full_pass():
    model = lm_model([{"type": "mamba"}, {"type": "transformer", "causal": True}], "learned")
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    new = generate(model, prompt, 6, temperature=0.0)
    seq = prompt
    for _ in range(6):
        with torch.no_grad():
            seq = torch.cat([seq, model(seq).x[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(new, seq[:, 3:])
    assert torch.equal(generate(model, prompt, 6, temperature=0.0), new)       # deterministic
    assert torch.equal(generate(model, prompt, 6, top_k=1), new)               # top-1 sampling is greedy


def test_sampling_is_reproducible_under_a_seed_and_varies_across_seeds():
    model = lm_model([{"type": "s4d"}])
    prompt = torch.tensor([[1, 2]] * 4)
    draw = [generate(model, prompt, 12, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


def test_top_k_samples_only_among_the_k_largest_logits():
    logits = torch.tensor([[0.0, 3.0, 2.0, -1.0, 2.5]]).expand(500, 5)
    drawn = sample(logits, 5.0, 2, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 4}
    assert torch.equal(sample(logits, 0.0, None, None), torch.ones(500, dtype=torch.long))


@pytest.mark.parametrize("kwargs,key", [({"max_new_tokens": 0}, "--max-new-tokens"),
                                        ({"temperature": -1.0}, "--temperature"),
                                        ({"temperature": float("inf")}, "--temperature"),
                                        ({"top_k": VOCAB + 1}, "--top-k"),
                                        ({"prompt": torch.tensor([[VOCAB]])}, "--prompt-ids"),
                                        ({"prompt": torch.zeros(1, 0, dtype=torch.long)}, "--prompt"),
                                        ({"prompt": torch.zeros(1, 30, dtype=torch.long)}, "--max-new-tokens")])
def test_bad_generation_options_name_the_option(kwargs, key):
    model = lm_model([{"type": "mamba"}], "learned")            # learned positions: at most 32
    options = {"prompt": torch.tensor([[1]]), "max_new_tokens": 4, **kwargs}
    with pytest.raises(hs.ConfigError) as err:
        generate(model, options.pop("prompt"), **options)
    assert err.value.path == key


# -- the command, on run directories written by `hybridseq train` -------------------------------------

TINY = ["model.d_model=16", "train.epochs=1", "train.max_steps_per_epoch=2", "--no-progress"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "chars"
    assert main(["train", str(ROOT / "configs/experiments/stdlib_chars.yaml"), "--out", str(out), *TINY,
                 "data.length=32", "data.max_chars=3000", "model.encoder.max_len=32", "data.batch_size=8"]) == 0
    return out


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "copy"
    assert main(["train", str(ROOT / "configs/experiments/selective_copy.yaml"), "--out", str(out), *TINY,
                 "data.length=16", "data.tokens=4", "data.n_train=32", "data.n_test=8", "data.batch_size=8"]) == 0
    return out


def test_token_training_without_a_run_directory_records_no_vocabulary():
    from hybridseq.config import load_config
    from hybridseq.train.trainer import train

    cfg = load_config(ROOT / "configs/experiments/selective_copy.yaml",
                      ["data.length=8", "data.tokens=2", "data.n_train=16", "data.n_test=4", "model.d_model=8",
                       "train.epochs=1", "train.max_steps_per_epoch=1"])
    assert train(cfg, None, progress=False)["task"] == "lm"


def run_json(capsys, *argv):
    capsys.readouterr()
    assert main(["generate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_continues_text_with_the_runs_vocabulary(text_run, capsys):
    assert json.loads((text_run / "vocab.json").read_text()) == {"size": 256, "text": "utf8_bytes"}
    got = run_json(capsys, str(text_run), "--prompt", "def f(x):", "--max-new-tokens", "12", "--temperature", "0")
    assert got["prompt_ids"] == list(b"def f(x):") and len(got["ids"]) == 12
    assert got["text"] == bytes(got["ids"]).decode("utf-8", errors="replace")
    again = run_json(capsys, str(text_run), "--prompt", "def f(x):", "--max-new-tokens", "12", "--temperature", "0")
    assert again["ids"] == got["ids"]                                           # greedy: deterministic
    seeded = [run_json(capsys, str(text_run), "--prompt", "a", "--max-new-tokens", "16", "--seed", s)["ids"]
              for s in ("5", "5", "6")]
    assert seeded[0] == seeded[1] and seeded[0] != seeded[2]
    capsys.readouterr()
    assert main(["generate", str(text_run), "--prompt", "def f(x):", "--max-new-tokens", "12", "--temperature",
                 "0"]) == 0
    assert capsys.readouterr().out == got["text"] + "\n"                      # plain output: the new text


def test_generate_takes_token_ids_on_synthetic_token_data(copy_run, capsys):
    assert json.loads((copy_run / "vocab.json").read_text()) == {"size": 16, "text": None}
    got = run_json(capsys, str(copy_run), "--prompt-ids", "2,0,0,5,1", "--max-new-tokens", "4", "--top-k", "3")
    assert got["prompt_ids"] == [2, 0, 0, 5, 1] and got["text"] is None
    assert len(got["ids"]) == 4 and all(0 <= i < 16 for i in got["ids"])
    assert main(["generate", str(copy_run), "--prompt-ids", "2,3", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip().count(",") == 2                     # ids, comma-separated


@pytest.mark.parametrize("argv,words", [
    (["--prompt", "x"], "--max-new-tokens: missing"),
    (["--max-new-tokens", "3"], "--prompt: give exactly one of --prompt TEXT or --prompt-ids"),
    (["--prompt", "x", "--prompt-ids", "1", "--max-new-tokens", "3"], "give exactly one of"),
    (["--prompt", "", "--max-new-tokens", "3"], "--prompt: must not be empty"),
    (["--prompt", "x", "--max-new-tokens", "many"], "--max-new-tokens: expected an integer, got 'many'"),
    (["--prompt", "x", "--max-new-tokens", "3", "--temperature", "hot"], "--temperature: expected a number"),
    (["--prompt", "x", "--max-new-tokens", "3", "--temperature", "-2"], "--temperature: must be a finite number >= 0"),
    (["--prompt", "x", "--max-new-tokens", "3", "--top-k", "0"], "--top-k: must be in [1, 256]"),
    (["--prompt-ids", "1,b", "--max-new-tokens", "3"], "--prompt-ids: expected comma-separated token ids"),
    (["--prompt-ids", "300", "--max-new-tokens", "3"], "--prompt-ids: token ids must be in [0, 256)"),
    (["--prompt", "x", "--max-new-tokens", "40"], "model.encoder.max_len=32"),
    (["--prompt", "x", "--max-new-tokens", "3", "--checkpoint", "nope"], "nope.safetensors not found"),
])
def test_bad_arguments_are_one_line_errors(text_run, capsys, argv, words):
    capsys.readouterr()
    assert main(["generate", str(text_run), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_text_prompts_need_a_run_whose_tokens_spell_text(copy_run, capsys):
    assert main(["generate", str(copy_run), "--prompt", "hello", "--max-new-tokens", "3"]) == 2
    err = capsys.readouterr().err
    assert "--prompt: the tokens of this run's data ('selective_copy') spell no text" in err
    assert "--prompt-ids" in err


def test_the_generation_bench_runs_and_prints_its_table(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--lengths", "32", "64"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | L | tokens/s |") and len(lines) == 2 + 4
    rows = {(r[0], r[1]): r for r in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert float(rows[("transformer", "64")][4]) == 2 * float(rows[("transformer", "32")][4])   # cache doubles
    assert rows[("mamba", "64")][4] == rows[("mamba", "32")][4]                                  # state fixed


class WrongStep(hs.Block):
    """A position-wise block whose step disagrees with its forward, for the conformance check."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.lin = torch.nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, seq):
        return dataclasses.replace(seq, x=self.lin(seq.x))

    def allocate_state(self, batch_size, device=None, dtype=None):
        return None

    def step(self, x_t, state, gap=None):
        return 2 * self.lin(x_t), state


def test_the_conformance_kit_checks_the_step_mode():
    from hybridseq.testing import check_block

    check_block("transformer", {"causal": True})
    check_block("transformer")                               # causal: false has no step mode: skipped
    with pytest.raises(AssertionError, match="step-by-step outputs differ from the full pass"):
        check_block(WrongStep)
