"""The post-LN block as one autograd node (rmaat_model.fused_block) equals the module path:
same values, and every gradient (input and each parameter) equal to autograd's through the
modules, with and without dropout masks and padding, for full windows and memory-row queries."""

from __future__ import annotations

import pytest
import torch

from rmaat_model.kernels import dropout_masks
from rmaat_model.blocks import Block
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)

CFG = dict(vocab_size=20, n_classes=3, max_len=64, d_model=16, n_heads=2, n_layers=2, d_ff=24,
           segment_len=16, n_mem=4, dropout=0.1, retention="none")


def run(block: Block, fused: bool, x, key_mask, all_real, n_query, masks, w):
    block.fused = fused
    block.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = block(x, key_mask, all_real, n_query, masks)
    # one node (Python's FusedBlockBackward or C++'s CppNode<rmaat::FusedBlock>), or the modules' graph
    assert ("FusedBlock" in y.grad_fn.name()) == fused
    (y * w).sum().backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in block.named_parameters()}


@pytest.mark.parametrize("arch", ["rmaat", "rlt"])
@pytest.mark.parametrize("n_query", [None, 4], ids=["all-rows", "memory-rows"])
@pytest.mark.parametrize("padded", [False, True], ids=["all-real", "padded"])
@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_fused_block_equals_the_module_path(arch, n_query, padded, dropout):
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch=arch, **CFG)).double().blocks[0]
    for p in block.parameters():   # away from the initialisation's zeros and ones
        p.data.add_(torch.randn_like(p) * 0.1)
    assert block.fused
    g = torch.Generator().manual_seed(1)
    B, W, D = 3, 20, 16
    x = torch.randn(B, W, D, generator=g, dtype=torch.float64)
    key_mask = torch.ones(B, W, dtype=torch.bool)
    if padded:
        key_mask[1, 13:] = False
    Wq = W if n_query is None else n_query
    masks = dropout_masks((Wq, Wq), B, D, 0.1, x, True) if dropout else None
    w = torch.randn(B, Wq, D, generator=g, dtype=torch.float64)
    ref = run(block, False, x, key_mask, not padded, n_query, masks, w)
    out = run(block, True, x, key_mask, not padded, n_query, masks, w)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-10, atol=1e-12, msg="dx")
    assert out[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(out[2][name], ref[2][name], rtol=1e-10, atol=1e-12, msg=name)


def test_pre_ln_and_softmax_blocks_use_the_module_path():
    assert not build_model(ModelConfig(arch="rmaat", norm="pre", **CFG)).blocks[0].fused
    assert not build_model(ModelConfig(arch="rmt", **CFG)).blocks[0].fused
    assert build_model(ModelConfig(arch="at", **CFG)).blocks[0].fused


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_the_no_graph_path_gives_the_graph_path_bits(mode):
    """With grad mode off the block runs its forward without the autograd Function (AMRB's
    first pass, evaluation): the same operations, so the same bits as the graph's value."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[1]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 20, 16, generator=g)
    key_mask = torch.ones(3, 20, dtype=torch.bool)
    key_mask[0, 11:] = False
    masks = dropout_masks((4, 4), 3, 16, 0.1, x, True)
    with_graph = block(x, key_mask, False, 4, masks)
    assert "FusedBlock" in with_graph.grad_fn.name()
    with getattr(torch, mode)():
        without = block(x, key_mask, False, 4, masks)
    assert without.grad_fn is None
    assert torch.equal(without, with_graph.detach())


@pytest.mark.parametrize("arch,norm", [("rmaat", "post"), ("rlt", "post"), ("rmt", "post"), ("rmaat", "pre"),
                                       ("rmt", "pre")])
@pytest.mark.parametrize("padded", [False, True], ids=["all-real", "padded"])
def test_a_block_of_query_rows_equals_the_full_blocks_first_rows(arch, norm, padded):
    """The last block computes only the memory rows (Q of those rows, K and V of all): the
    value and every gradient are those of the full block with its other rows discarded -- for
    the fused node and the module path, linear and softmax kernels, post- and pre-LN."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch=arch, norm=norm, **CFG)).double().blocks[1]
    for p in block.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(3)
    B, W, D, Wq = 3, 20, 16, 4
    x = torch.randn(B, W, D, generator=g, dtype=torch.float64)
    key_mask = torch.ones(B, W, dtype=torch.bool)
    if padded:
        key_mask[2, 9:] = False
    full = dropout_masks((W, W), B, D, 0.1, x, True)
    w = torch.randn(B, Wq, D, generator=g, dtype=torch.float64)
    fused = block.fused

    def grads(n_query, masks):
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        y = block(xi, key_mask, not padded, n_query, masks)[:, :Wq]
        (y * w).sum().backward()
        return y.detach(), xi.grad, {n: p.grad.clone() for n, p in block.named_parameters()}

    ref = grads(None, full)
    out = grads(Wq, [m[:, :Wq].contiguous() for m in full])   # the rows a draw for Wq queries holds
    assert block.fused == fused
    torch.testing.assert_close(out[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-10, atol=1e-12, msg="dx")
    for name in ref[2]:
        torch.testing.assert_close(out[2][name], ref[2][name], rtol=1e-10, atol=1e-12, msg=name)


def test_a_second_derivative_through_the_block_is_refused():
    """As the kernel's (test_kernels): the block's written-out backward is once differentiable,
    so a gradient penalty through it raises instead of differentiating a wrong graph."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[0]
    x = torch.randn(3, 20, 16, requires_grad=True)
    y = block(x, None, True, None, None)
    assert "FusedBlock" in y.grad_fn.name()
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.square().sum().backward()
