"""Every registered block, built-in or from an installed plugin, passes the conformance checks (also under
bf16 and fp16 autocast); every
block that declares itself compile_safe runs under torch.compile with the eager outputs and NFE."""
import pytest
import torch

from hybridseq import registry
from hybridseq.testing import block_config, check_block, example_input


@pytest.mark.parametrize("name", registry.blocks.names())
def test_block_conformance(name):
    check_block(name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", registry.blocks.names())
def test_block_trains_under_cpu_autocast(name, dtype):
    check_block(name, autocast=dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", registry.blocks.names())
def test_block_trains_under_cuda_bf16_autocast(name):
    check_block(name, autocast=torch.bfloat16, device="cuda")


@pytest.mark.parametrize("name", [n for n in registry.blocks.names() if registry.blocks.get(n, "type").compile_safe])
def test_compile_safe_blocks_match_eager_under_torch_compile(name):
    cls, cfg = block_config(name)
    block = cls(cfg).eval()
    x = example_input(cls, cfg)
    compiled = torch.compile(block, backend="aot_eager")       # the graph capture, without code generation
    stats = {}
    with torch.no_grad():
        for label, fn in (("eager", block), ("compiled", compiled)):
            if hasattr(block, "solver"):
                block.solver.reset()
            out = fn(x).x
            stats[label] = (out, block.stats())
    torch.testing.assert_close(stats["compiled"][0], stats["eager"][0], rtol=1e-4, atol=1e-5)
    assert stats["compiled"][1] == stats["eager"][1]                # NFE counted alike
