"""The registry is a leaf with an injected loader; reading it imports no training code; no import cycle."""
import ast
import subprocess
import sys
from pathlib import Path

import hybridseq
from hybridseq import registry

PACKAGE = Path(hybridseq.__file__).resolve().parent
HEAVY = ("hybridseq.train", "hybridseq.ablate", "hybridseq.analysis", "tqdm", "matplotlib")


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _imports(name: str, path: Path, is_pkg: bool, mods: dict) -> set[str]:
    """Package modules that ``name`` imports anywhere in its file (lazy imports inside functions too)."""
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
    return {m for m in found if m in mods and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, trail = {}, []

    def visit(node):
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_package():
    mods = _modules()
    graph = {name: _imports(name, *where, mods) for name, where in mods.items()}
    assert graph["hybridseq.spec"] >= {"hybridseq.registry", "hybridseq.errors"}   # the walk sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_registry_is_a_leaf():
    mods = _modules()
    assert _imports("hybridseq.registry", *mods["hybridseq.registry"], mods) == {"hybridseq.errors"}


def test_loader_is_injected():
    from hybridseq import plugins

    assert registry._loader == [plugins.load]


def test_reading_block_names_imports_no_training_code():
    code = ("import sys, torch; before = set(sys.modules); import hybridseq; from hybridseq import registry; "
            "names = registry.blocks.names(); assert 'mamba' in names and 'classify' in registry.tasks; "
            f"heavy = {HEAVY!r}; "
            "print(sorted(m for m in sys.modules if m.startswith(heavy[:3]) or m.startswith(heavy[3:]) "
            "and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
