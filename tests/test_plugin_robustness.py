"""Broken third-party plugins, installed through real entry points, are reported by name and skipped.

Each plugin below is a throwaway distribution (a module plus a ``NAME-0.1.dist-info`` folder with its
``entry_points.txt``) in a temporary folder put on PYTHONPATH; the ``hybridseq`` command runs in a fresh
process, so plugin loading happens exactly as for an installed package.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

GOOD = '''
from dataclasses import dataclass, replace
import torch
import hybridseq as hs

class Scale(hs.Block):
    @dataclass
    class Config:
        d_model: int = 0
        scale: float = 2.0

    def __init__(self, cfg):
        super().__init__(cfg)
        self.scale = torch.nn.Parameter(torch.tensor(cfg.scale))

    def forward(self, seq):
        return replace(seq, x=seq.x * self.scale)

@hs.hookimpl
def hybridseq_register_blocks(register):
    register("tiny_scale", Scale)
'''
PLUGINS = {  # entry-point name -> module source
    "hs-good": GOOD,
    "hs-broken": 'raise ImportError("needs libfoo, which is not installed")\n',
    "hs-exits": 'import sys\nsys.exit("this plugin needs a GPU")\n',
    "hs-typo": ('import hybridseq as hs\n\n@hs.hookimpl\ndef hybridseq_register_block(register):\n'
                '    register("never_registered", hs.Block)\n'),
    "hs-badargs": ('import hybridseq as hs\n\n@hs.hookimpl\ndef hybridseq_register_blocks(reg):\n'
                   '    reg("never_registered", hs.Block)\n'),
    "hs-command": ('import hybridseq as hs\n\n@hs.hookimpl\ndef hybridseq_register_commands(cli):\n'
                   '    cli.add_parser("blocks", help="takes a built-in command name")\n'),
    "hs-clash": GOOD.replace('register("tiny_scale", Scale)',
                             'register("transformer", Scale)\n    register("clash_extra", Scale)'),
}
CONFIG = '''
model:
  d_model: 8
  input: {kind: irregular, channels: 2}
  encoder: {type: linear}
  blocks: [{type: tiny_scale, scale: 3.0}, {type: transformer, heads: 2}]
  head: {type: classify, classes: 3}
'''
CLI = """  # runs several hybridseq command lines in one process, each followed by its exit code
import json, sys
from hybridseq.cli import main
for args in json.loads(sys.argv[1]):
    print(f"@@rc={main(args)}@@", flush=True)
"""
EARLY = """  # a plugin object added before anything else loaded, taking a built-in name
import hybridseq as hs
from hybridseq import plugins, registry
class Early:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("mlp", hs.Block)
plugins.add_plugin(Early(), "early")
print(registry.blocks.entry("mlp").owner)
print("@@rc=0@@")
"""
PROCESSES = {  # HYBRIDSEQ_LOAD_PLUGINS (None: unset) -> {run name: hybridseq command line, or None for EARLY}
    None: {"blocks": ["blocks"], "plugins": ["plugins", "--json"],
           "describe": ["describe", "{config}", "--forward", "5"]},
    "": {"none": ["plugins", "--json"]},
    "hs-good, hs-clash,hs-missing": {"some": ["plugins", "--json"]},
    " ": {"early": None},   # blank: no entry-point plugin either
}


def write_distribution(root, name: str, source: str) -> None:
    module = name.replace("-", "_")
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hybridseq]\n{name} = {module}\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run in PROCESSES, the processes started at once: run name -> CompletedProcess (the runs of
    one process share its stderr)."""
    root = tmp_path_factory.mktemp("site")
    for name, source in PLUGINS.items():
        write_distribution(root, name, source)
    config = root / "model.yaml"
    config.write_text(CONFIG)
    procs = {}
    for selection, commands in PROCESSES.items():
        env = {k: v for k, v in os.environ.items() if k != "HYBRIDSEQ_LOAD_PLUGINS"}
        env["OMP_NUM_THREADS"] = "1"                      # several processes at once: no thread contention
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        if selection is not None:
            env["HYBRIDSEQ_LOAD_PLUGINS"] = selection
        lines = [[a.format(config=config) for a in args] for args in commands.values() if args is not None]
        argv = ["-c", CLI, json.dumps(lines)] if lines else ["-c", EARLY]
        procs[selection] = subprocess.Popen([sys.executable, *argv], env=env, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    for selection, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        parts = re.split(r"@@rc=(-?\d+)@@\n", stdout)                 # [out, rc, out, rc, ..., rest]
        assert len(parts) == 2 * len(PROCESSES[selection]) + 1, f"a process crashed:\n{stderr}"
        for k, name in enumerate(PROCESSES[selection]):
            out[name] = subprocess.CompletedProcess(proc.args, int(parts[2 * k + 1]), parts[2 * k], stderr)
    return out


def by_name(result) -> dict:
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_cli_still_runs_and_lists_the_working_blocks(runs):
    result = runs["blocks"]
    assert result.returncode == 0, result.stderr
    assert "tiny_scale  [sequence -> sequence]  (plugin: hs-good)" in result.stdout
    assert "transformer  [sequence -> sequence]  (plugin: hybridseq.blocks.backbones)" in result.stdout
    assert "clash_extra" in result.stdout and "never_registered" not in result.stdout


def test_each_failure_is_a_warning_naming_the_plugin(runs):
    stderr = runs["blocks"].stderr
    assert "PluginWarning: hybridseq plugin 'hs-broken': failed to import: ImportError: needs libfoo" in stderr
    assert "hybridseq plugin 'hs-exits': failed to import: SystemExit: this plugin needs a GPU" in stderr
    assert "hybridseq plugin 'hs-typo': unknown hook(s) hybridseq_register_block" in stderr
    assert "hybridseq plugin 'hs-badargs': rejected:" in stderr and "'reg'" in stderr
    assert ("hybridseq plugin 'hs-clash': skipped block 'transformer' is already registered by plugin "
            "'hybridseq.blocks.backbones'") in stderr
    assert "hybridseq plugin 'hs-command': hybridseq_register_commands raised ArgumentError" in stderr
    assert "hs-good" not in stderr
    assert "Traceback" not in stderr


def test_plugins_json_reports_errors_and_registrations(runs):
    assert runs["plugins"].returncode == 0, runs["plugins"].stderr
    info = by_name(runs["plugins"])
    assert info["hs-good"]["registered"] == {"blocks": ["tiny_scale"]} and info["hs-good"]["errors"] == []
    assert info["hs-good"]["version"] == "0.1" and info["hs-good"]["builtin"] is False
    assert info["hs-clash"]["registered"] == {"blocks": ["clash_extra"]}
    assert "already registered" in info["hs-clash"]["errors"][0]
    for broken in ("hs-broken", "hs-exits", "hs-typo", "hs-badargs"):
        assert info[broken]["registered"] == {} and len(info[broken]["errors"]) == 1


def test_a_model_using_the_working_plugin_still_assembles_and_runs(runs):
    result = runs["describe"]
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["b0"][1] == "tiny_scale" and rows["b1"][1] == "transformer"


def test_empty_selection_loads_no_entry_point_plugin(runs):
    result = runs["none"]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert "PluginWarning" not in result.stderr


def test_selection_loads_only_the_named_plugins_and_reports_unknown_names(runs):
    result = runs["some"]
    assert result.returncode == 0, result.stderr
    assert set(by_name(result)) == {"hs-good", "hs-clash"}
    assert "HYBRIDSEQ_LOAD_PLUGINS names plugin 'hs-missing', which is not installed" in result.stderr
    assert "hs-broken" not in result.stderr and "hs-typo" not in result.stderr


def test_a_plugin_added_early_cannot_take_a_builtin_name(runs):
    result = runs["early"]
    assert result.stdout.strip() == "hybridseq.blocks.backbones", result.stderr
    assert "hybridseq plugin 'early': skipped block 'mlp' is already registered" in result.stderr
