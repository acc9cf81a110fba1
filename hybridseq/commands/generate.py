"""``hybridseq generate``: sample a continuation from a trained causal token model, one token at a time."""
from __future__ import annotations

import json

from ..errors import ConfigError
from ..hookspecs import hookimpl


def _ids(text: str) -> list[int]:
    """``--prompt-ids 1,2,3`` -> [1, 2, 3]."""
    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise ConfigError("--prompt-ids", f"expected comma-separated token ids such as 1,2,3, got {text!r}") from None
    if not ids:
        raise ConfigError("--prompt-ids", "expected at least one token id, e.g. 1,2,3")
    return ids


def _number(value: str | None, flag: str, kind: type, default=None):
    """A numeric option read here rather than by argparse, so a bad value is a one-line error naming it."""
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(flag, f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def _codec(vocabulary: dict | None, run: str):
    """The run's text codec, or None when its tokens spell no text (or the run recorded no vocabulary)."""
    from ..data.tokens import TEXT_CODECS

    name = (vocabulary or {}).get("text")
    if name is None:
        return None
    if name not in TEXT_CODECS:
        raise ConfigError(f"{run}/vocab.json", f"unknown text codec {name!r}", choices=TEXT_CODECS, got=name)
    return TEXT_CODECS[name]


def cmd_generate(args) -> int:
    import torch

    from ..generate import Decoder, generate
    from ..train.checkpoint import RunDir, load_run, run_files

    if (args.prompt is None) == (args.prompt_ids is None):
        raise ConfigError("--prompt", "give exactly one of --prompt TEXT or --prompt-ids 1,2,3")
    if args.max_new_tokens is None:
        raise ConfigError("--max-new-tokens", "missing: how many tokens to sample, e.g. --max-new-tokens 100")
    if args.prompt == "":
        raise ConfigError("--prompt", "must not be empty: the model needs at least one token to continue")
    count = _number(args.max_new_tokens, "--max-new-tokens", int)
    temperature = _number(args.temperature, "--temperature", float, 1.0)
    top_k = _number(args.top_k, "--top-k", int)
    seed = _number(args.seed, "--seed", int, 0)
    prompt = _ids(args.prompt_ids) if args.prompt_ids is not None else None
    weights, _ = run_files(args.run_dir, args.checkpoint)
    run = RunDir(weights.parent)
    cfg, model = load_run(args.run_dir, args.checkpoint)
    decoder = Decoder(model)                                  # a model that cannot step fails here
    codec = _codec(run.vocabulary(), str(run))
    if prompt is None:
        if codec is None:
            data = (cfg.get("data") or {}).get("name", "?")
            raise ConfigError("--prompt", f"the tokens of this run's data ('{data}') spell no text (no text codec in "
                              f"{run.path / RunDir.VOCAB}); give token ids with --prompt-ids 1,2,3")
        prompt = codec.encode(args.prompt)
    generator = torch.Generator().manual_seed(seed)
    new = generate(model, torch.tensor([prompt]), count, temperature=temperature, top_k=top_k,
                   generator=generator, decoder=decoder)[0].tolist()
    text = codec.decode(new) if codec is not None else None
    if args.json:
        print(json.dumps({"run": str(args.run_dir), "checkpoint": args.checkpoint, "prompt_ids": prompt, "ids": new,
                          "text": text, "temperature": temperature, "top_k": top_k, "seed": seed}))
    else:
        print(text if text is not None else ",".join(map(str, new)))
    return 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("generate", help="sample tokens after a prompt from a run of a causal token model")
    p.add_argument("run_dir", help="run directory written by `hybridseq train` (a model on token input with an "
                   "lm head)")
    p.add_argument("--prompt", help="text to continue, encoded with the run's vocabulary (text corpora such as "
                   "stdlib_chars)")
    p.add_argument("--prompt-ids", metavar="1,2,3", help="token ids to continue (any token data)")
    p.add_argument("--max-new-tokens", metavar="N", help="tokens to sample (required)")
    p.add_argument("--temperature", metavar="T", help="softmax temperature; 0 = greedy (default: 1)")
    p.add_argument("--top-k", metavar="K", help="sample among the K most likely tokens (default: all)")
    p.add_argument("--seed", metavar="S", help="seed of the sampling (default: 0)")
    p.add_argument("--checkpoint", default="best", help="checkpoint name in the run dir (default: best)")
    p.add_argument("--json", action="store_true", help="print the prompt ids, new ids and text as JSON")
    p.set_defaults(func=cmd_generate)
