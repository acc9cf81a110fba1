"""``hybridseq analyze``: attention spectra and Lyapunov exponents of a saved run's continuous-depth heads."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from ..hookspecs import hookimpl

INPUT_HELP = ("'data' (a batch from the run's dataset, the default when the config has a data section), "
              "'random' (random input of the model's input width) or a .pt file holding a tensor [B, L, C]")


def _input(source: str, cfg, model, batch: int, seed: int):
    """The batch the model is run on (see INPUT_HELP)."""
    if source not in ("data", "random"):
        path = Path(source)
        if not path.is_file():
            raise ConfigError("--input", f"{source}: not 'data', 'random' or an existing .pt file")
        try:
            batch = torch.load(path, weights_only=True)
        except Exception as err:      # not a torch file, truncated, or holding more than tensors
            raise ConfigError("--input", f"{source}: cannot load it as a tensor file ({type(err).__name__})") from None
        if not isinstance(batch, torch.Tensor) or batch.dim() != 3 or not batch.is_floating_point():
            raise ConfigError("--input", f"{source}: expected a float tensor [B, L, C], got "
                              + (f"shape {list(batch.shape)}" if isinstance(batch, torch.Tensor)
                                 else type(batch).__name__))
        if batch.shape[-1] != model.spec.channels:
            raise ConfigError("--input", f"{source}: the tensor has {batch.shape[-1]} channels but the model takes "
                              f"{model.spec.channels}")
        return batch
    if source == "data" and "data" in cfg:
        from ..data import collate, load_data

        splits = load_data(cfg.data)
        dataset = splits.val if splits.val is not None and len(splits.val) else splits.test
        return collate([dataset[i] for i in range(min(batch, len(dataset)))])[0]
    from ..testing import example_input

    first = model.spec.nodes[0]
    return example_input(first.cls, first.cfg, batch=batch, length=16, seed=seed)


def cmd_analyze(args) -> int:
    from ..analysis import analyze, write_report
    from ..train.checkpoint import load_run

    cfg, model = load_run(args.path)
    torch.manual_seed(args.seed)
    batch = _input(args.input or ("data" if "data" in cfg else "random"), cfg, model, args.batch, args.seed)
    result = analyze(model, batch, times=args.times, topk=args.topk, steps=args.steps, lyapunov=args.lyapunov)
    if not result:
        print("no continuous-depth head (ode_transformer, neural_ode_transformer) or pde_attention in this model; "
              "nothing to analyze")
        return 1
    here = Path(args.path)
    out = Path(args.out) if args.out else (here if here.is_dir() else here.parent) / "analysis"
    for path in write_report(result, out):
        print(f"wrote {path}")
    for name, node in result.items():
        if "pde" in node:
            coef = ", ".join(f"{k} mean {sum(v) / len(v):.3f}" for k, v in node["pde"]["coefficients"].items())
            print(f"{name} ({node['type']}): {node['pde']['pde']} on {node['pde']['target']}: {coef}")
            continue
        lyap = ", ".join(f"{v:+.3f}" for v in node["lyapunov"]["mean"])
        radius = max(max(row) for row in node["spectra"]["vo_radius"])
        print(f"{name} ({node['type']}): top Lyapunov exponents [{lyap}]; max |λ(W_V W_O)| = {radius:.3f}")
    return 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("analyze", help="spectra and Lyapunov exponents of continuous-depth heads of a run")
    p.add_argument("path", help="run directory, or a .safetensors file with config.yaml beside it")
    p.add_argument("--input", default=None, help=INPUT_HELP)
    p.add_argument("--out", default=None, help="output directory (default: <run>/analysis)")
    p.add_argument("--times", type=int, default=9, help="depth samples t in [0, 1] for the spectra")
    p.add_argument("--topk", type=int, default=4, help="number of Lyapunov exponents")
    p.add_argument("--steps", type=int, default=32, help="RK4 steps of the depth flow for the exponents")
    p.add_argument("--lyapunov", choices=("ftle", "benettin"), default="ftle",
                   help="finite-time exponents of the depth map (default) or Benettin's asymptotic estimate")
    p.add_argument("--batch", type=int, default=4, help="samples in the analysed batch")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_analyze)
