"""docs/plugins.md as a user follows it: the plugin package is written from the page's code blocks,
installed into a fresh environment (which sees this one's packages), and its tests run with the page's
command, from where the page says, in a folder that also holds a clone named ``hybridseq``."""
import importlib.metadata as md
import importlib.util
import os
import re
import shlex
import site
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()
PLUGIN = "hybridseq-causal-conv"


def _block(after: str, lang: str) -> str:
    """The first ``lang`` code block after the text ``after``."""
    start = GUIDE.index(after)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(GUIDE, start)
    return match.group(1)


def test_guide_test_command_runs_where_the_guide_says(tmp_path):
    parent = tmp_path / "src"
    (parent / "hybridseq" / "hybridseq").mkdir(parents=True)            # a clone beside the plugin
    (parent / "hybridseq" / "README.md").write_text("# hybridseq\n")
    plugin = parent / PLUGIN
    (plugin / "tests").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(_block("**1. `pyproject.toml`**", "toml"))
    (plugin / "hybridseq_causal_conv.py").write_text(_block("**2. `hybridseq_causal_conv.py`**", "python"))
    (plugin / "README.md").write_text("# hybridseq-causal-conv\n")
    (plugin / "tests" / "test_hybridseq_causal_conv.py").write_text(_block("## Testing with", "python"))

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    inner = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                         text=True).strip())
    # the new environment sees what this one has installed (torch, pytest, pip ...), and this checkout's hybridseq
    outer = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if Path(p).is_dir()]
    (inner / "_outer.pth").write_text("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in outer) + "\n")
    (inner / "hybridseq_under_test.pth").write_text(f"{ROOT}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env.pop("HYBRIDSEQ_LOAD_PLUGINS", None)

    commands = [line for line in _block("**5. Test it and describe it.**", "bash").splitlines() if line.strip()]
    install, test = commands
    assert install.startswith("pip install -e ") and "pytest" in test
    # the page's install line, offline where it can be: the dependencies are installed already
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    proc = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *isolation, *shlex.split(install)[2:]],
                          cwd=parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(["bash", "-c", test], cwd=parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "1 passed" in proc.stdout                  # check_block found the block through the entry point
    with pytest.raises(md.PackageNotFoundError):        # installed in the test's environment only
        md.distribution(PLUGIN)
