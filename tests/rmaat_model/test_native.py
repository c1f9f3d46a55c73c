"""The fused block in C++ (rmaat_model.native, csrc/fused_block.cpp) is the Python block to
the bit: values and every gradient, in a block and through whole AMRB and BPTT steps, so a
run's numbers do not depend on whether the extension was built. How it is chosen
(``RMAAT_NATIVE``), what happens when it cannot be built, and that a build lock left by a
killed build does not hang the next one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from astro_rmaat.errors import ConfigError
from rmaat_model import native
from rmaat_model.amrb import forward_backward
from rmaat_model.kernels import LOG2E, dropout_masks, phi_kernel
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread, same_bits  # noqa: F401  (one_thread: autouse)

REPO = Path(__file__).resolve().parents[2]
CFG = dict(vocab_size=20, n_classes=3, max_len=128, d_model=16, n_heads=2, n_layers=2, d_ff=24,
           segment_len=16, n_mem=4, dropout=0.2, retention="ltp")


@pytest.fixture
def fresh_state(monkeypatch):
    """native's state forgotten before and restored after (RMAAT_NATIVE read again)."""
    saved = dict(native._state)
    native._state.clear()
    monkeypatch.delenv(native.ENV, raising=False)
    yield
    native._state.clear()
    native._state.update(saved)


def test_the_cpp_block_builds_and_is_the_one_that_runs():
    ext = native.extension()
    assert ext is not None, native.status()
    assert native.status().startswith("C++ block")
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[0]
    y = block(torch.randn(2, 20, 16, requires_grad=True), None, True)
    assert y.grad_fn.name().endswith("CppNode<rmaat::FusedBlock>")
    with native.disabled():
        y = block(torch.randn(2, 20, 16, requires_grad=True), None, True)
    assert y.grad_fn.name() == "FusedBlockBackward"
    assert native.status().startswith("C++ block")   # restored


def block_run(block, x, key_mask, all_real, n_query, masks, w):
    block.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = block(x, key_mask, all_real, n_query, masks)
    (y * w).sum().backward()
    with torch.inference_mode():
        y_nograd = block(x.detach(), key_mask, all_real, n_query, masks)
    return [y.detach(), y_nograd, x.grad] + [p.grad for p in block.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("arch", ["rmaat", "rlt"])
@pytest.mark.parametrize("n_query", [None, 4], ids=["all-rows", "memory-rows"])
@pytest.mark.parametrize("padded", [False, True], ids=["all-real", "padded"])
@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_the_cpp_block_is_the_python_block_to_the_bit(dtype, arch, n_query, padded, dropout):
    assert native.extension() is not None, native.status()
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch=arch, **CFG)).to(dtype).blocks[1]
    for p in block.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(1)
    B, W, D = 3, 20, 16
    x = torch.randn(B, W, D, generator=g).to(dtype)
    key_mask = torch.ones(B, W, dtype=torch.bool)
    if padded:
        key_mask[1, 13:] = False
    Wq = W if n_query is None else n_query
    masks = dropout_masks((Wq, Wq), B, D, 0.2, x, True) if dropout else None
    w = torch.randn(B, Wq, D, generator=g).to(dtype)
    out = block_run(block, x, key_mask, not padded, n_query, masks, w)
    with native.disabled():
        ref = block_run(block, x, key_mask, not padded, n_query, masks, w)
    names = ["y", "y without graph", "dx"] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, out, ref, strict=True):
        assert a.dtype == dtype and torch.equal(a, b), name


def cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def intel_at_avx512() -> bool:
    """An Intel CPU with ATen at its AVX-512 kernels (not lowered by ATEN_CPU_CAPABILITY): where the
    checks' exact counts below were measured (MKL's sums on Intel, ATen's exp2_ by 32-value rounds)."""
    return cpu_vendor() == "GenuineIntel" and torch.backends.cpu.get_cpu_capability() == "AVX512"


@pytest.mark.parametrize("W", [20, 32], ids=["tail", "whole-vectors"])
@pytest.mark.parametrize("n_query", [None, 4], ids=["all-rows", "memory-rows"])
@pytest.mark.parametrize("padded", [False, True], ids=["all-real", "padded"])
def test_the_checked_loops_run_only_for_shapes_whose_bits_they_have_matched(n_query, padded, W):
    """The block leaves some of its ATen products to its own loops (csrc/fused_block.cpp, checked
    products) only for a shape where they have been seen to give ATen's bits: the attention's
    products per head, and the input projection and the FFN's second map without their biases
    (which the loops that read them add). With all rows: four head products (8 x 8 and 9 x 8
    heads by 20 or 32 columns, windows with and without a vector tail), which ATen hands to
    MKL, whose sums on Intel's CPUs run in the loop's order; one projection and one FFN map:
    six shapes, all matched. With four query rows, two head products (9 x 8 x 4, 8 x 9 x 4)
    fall under ATen's 400-element threshold, where ATen rounds each term apart: refused on any
    CPU, and made by at::bmm; and the projection is two (the query rows', the keys' and
    values'). Two more checks: phi's exponential by rows (ATen's exp2_ by position, one for any
    shape) and the normaliser's gradient (ATen's sum in its order, one per window). Either way, and with the loops switched off, the block is the Python block's to
    the bit."""
    ext = native.extension()
    assert ext is not None, native.status()
    enabled, avx512, _, _ = ext.checked_products(forget=True)
    if not avx512:
        pytest.skip("the heads' loop needs AVX-512")
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch="rmaat", **dict(CFG, segment_len=W - CFG["n_mem"]))).blocks[1]
    for p in block.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(3)
    B, D = 3, 16
    x = torch.randn(B, W, D, generator=g)
    key_mask = torch.ones(B, W, dtype=torch.bool)
    if padded:
        key_mask[2, 11:] = False
    Wq = W if n_query is None else n_query
    masks = dropout_masks((Wq, Wq), B, D, 0.2, x, True)
    w = torch.randn(B, Wq, D, generator=g)
    try:
        out = block_run(block, x, key_mask, not padded, n_query, masks, w)
        _, _, matched, refused = ext.checked_products()
        ext.checked_products(False)
        off = block_run(block, x, key_mask, not padded, n_query, masks, w)
    finally:
        ext.checked_products(enabled)
    with native.disabled():
        ref = block_run(block, x, key_mask, not padded, n_query, masks, w)
    names = ["y", "y without graph", "dx"] + [n for n, _ in block.named_parameters()]
    for name, a, b, c in zip(names, out, off, ref, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c), name
    under_threshold, biases = (0, 2) if n_query is None else (2, 3)
    assert refused >= under_threshold and matched + refused == 4 + biases + 2
    if intel_at_avx512():
        assert (matched, refused) == (6 + biases - under_threshold, under_threshold)


def test_two_steps_at_the_demos_listops_size_are_the_same_to_the_bit_with_the_checked_loops():
    """At the demo's ListOps size (d_model 64, 4 heads of 16, windows of 128 + 8 memory rows:
    the loops' 4 x 6 tiles and their 8-column tails; ragged lengths 100..500) two AMRB steps with
    AdamW give the same losses and weights with the checked loops, with them switched off, and in
    the Python block; every shape checked here is matched on an Intel CPU."""
    ext = native.extension()
    assert ext is not None, native.status()
    cfg = ModelConfig(arch="rmaat", vocab_size=18, n_classes=10, max_len=512, d_model=64, n_heads=4, n_layers=2,
                      d_ff=128, dropout=0.1, segment_len=128, n_mem=8, retention="none")

    def run():
        torch.manual_seed(0)
        model = build_model(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(2):
            lengths = torch.randint(100, 501, (8,), generator=g)
            x = torch.randint(1, 18, (8, 500), generator=g)
            x[torch.arange(500)[None, :] >= lengths[:, None]] = 0
            loss, _ = forward_backward(model, x, torch.randint(0, 10, (8,), generator=g), method="amrb")
            losses.append(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return losses + [p.detach() for p in model.parameters()]

    enabled, avx512, _, _ = ext.checked_products(True, True)
    try:
        on = run()
        _, _, matched, refused = ext.checked_products()
        ext.checked_products(False)
        off = run()
    finally:
        ext.checked_products(enabled)
    with native.disabled():
        python = run()
    for a, b, c in zip(on, off, python, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    if avx512 and intel_at_avx512():
        assert matched > 10 and refused == 0, (matched, refused)


def test_a_float32_matmul_precision_below_full_keeps_the_loops_off():
    """With "medium" set after the loops matched their shapes, ATen may make float32 products in
    bfloat16 (oneDNN, on a CPU that has it) depending on a product's whole size, which a check
    on a few items would not see: the loops stay off (no shape is checked), and the block is the
    Python block's to the bit."""
    ext = native.extension()
    assert ext is not None, native.status()
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[1]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 20, 16, generator=g)
    key_mask = torch.ones(3, 20, dtype=torch.bool)
    w = torch.randn(3, 20, 16, generator=g)
    ext.checked_products(forget=True)
    block_run(block, x, key_mask, True, None, None, w)
    before = ext.checked_products()[2:]
    mkldnn = torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.set_float32_matmul_precision("medium")
        out = block_run(block, x, key_mask, True, None, None, w)
        with native.disabled():
            ref = block_run(block, x, key_mask, True, None, None, w)
        during = ext.checked_products()[2:]
    finally:
        torch.set_float32_matmul_precision("highest")
        torch.backends.mkldnn.matmul.fp32_precision = mkldnn
    for a, b in zip(out, ref, strict=True):
        assert torch.equal(a, b)
    # the keys hold the precision: had the loops been open under "medium", its shapes would
    # have been checked anew
    assert sum(before) > 0 and during == before


def test_the_bias_left_to_phi_and_the_values_is_added_as_atens_add():
    """phi_and_a and values with the projection's bias: phi(x + bias) and (v + bias) times the
    mask, the sum rounded first, as the Python block's operators on the projection with its bias
    (special values included: signed zeros, infinities, NaN, and values where the sum rounds)."""
    ext = native.extension()
    assert ext is not None, native.status()
    g = torch.Generator().manual_seed(11)
    B, D, W = 3, 8, 21
    x = special_values((B, D, W), torch.float32, g)
    bias = torch.randn(D, generator=g) * 2
    bias[1], bias[5] = -0.0, 1e-42                   # a signed zero, a subnormal
    mask = (torch.rand(B, 1, W, generator=g) > 0.3).float()
    phi_rT = special_values((4, W), torch.float32, g)
    xb = x + bias.view(-1, 1)
    assert same_bits(ext.phi_and_a(x, None, None, 1, bias)[0], phi_kernel(xb))
    fk, a = ext.phi_and_a(x, mask, phi_rT, 4, bias)
    ref = phi_kernel(xb).mul_(mask)
    assert same_bits(fk, ref)
    assert same_bits(a, (ref.view(B * D // 4, 4, W) + phi_rT).view(B, D, W))
    assert same_bits(ext.values(x, mask, bias), xb * mask)
    assert same_bits(ext.values(x, None, bias), xb * 1.0)
    assert same_bits(ext.values(x, mask), x * mask)


@pytest.mark.parametrize("method", ["amrb", "bptt"])
@pytest.mark.parametrize("reading", ["literal", "integrating"])
def test_a_training_step_is_the_same_to_the_bit(method, reading):
    """A ragged batch with dropout (AMRB's replays redraw the masks; its no-grad pass runs the
    C++ block without a graph): loss, logits and every parameter's gradient."""
    assert native.extension() is not None, native.status()
    g = torch.Generator().manual_seed(5)
    x = torch.randint(1, 20, (4, 128), generator=g)
    for b, n in enumerate((40, 128, 10, 70)):
        x[b, n:] = 0
    y = torch.randint(0, 3, (4,), generator=g)
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention_reading=reading, **CFG)).train()

    def step():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        loss, logits = forward_backward(model, x, y, method=method)
        return [loss, logits] + [p.grad for p in model.parameters()]

    out = step()
    with native.disabled():
        ref = step()
    names = ["loss", "logits"] + [n for n, _ in model.named_parameters()]
    for name, a, b in zip(names, out, ref, strict=True):
        assert (a is None and b is None) or torch.equal(a, b), name


@pytest.mark.parametrize("path", ["cpp", "python"])
def test_a_second_derivative_is_refused_on_both_paths(path):
    """Both backwards are written out and once differentiable: a gradient penalty through the
    block raises instead of differentiating a wrong graph."""
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[0]
    x = torch.randn(3, 20, 16, requires_grad=True)
    with native.disabled() if path == "python" else contextlib.nullcontext():
        y = block(x, None, True, None, None)
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    assert g.requires_grad
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.square().sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("dropout", [True, False], ids=["dropout", "no-dropout"])
def test_the_window_is_the_operators_to_the_bit(dtype, dropout):
    """A segment's window [mem | (tok_emb(seg) + pos_emb) * keep] in one C++ pass, and its
    backward: the values and the gradients of the memory (an expanded learned memory, as the
    first segment's), the embedding table (tokens repeated, some rows never used, special values
    in it) and the position rows are the Python operators' to the bit; the mask is a slice of one
    dropout draw, as the model's. A token outside the table is refused, naming it."""
    ext = native.extension()
    assert ext is not None, native.status()
    g = torch.Generator().manual_seed(14)
    B, M, N, D, V = 3, 4, 37, 16, 11
    mem_init = torch.randn(M, D, generator=g, dtype=dtype).requires_grad_(True)
    weight = special_values((V, D), dtype, g).requires_grad_(True)
    pos = torch.randn(N, D, generator=g, dtype=dtype).requires_grad_(True)
    tokens = torch.randint(0, V - 2, (B, N), generator=g)             # the last two rows unused
    keep = dropout_masks((N, N + M), B, D, 0.3, pos, True)[0] if dropout else None
    dx = torch.randn(B, M + N, D, generator=g, dtype=dtype)

    def run(window):
        mem = mem_init.unsqueeze(0).expand(B, -1, -1)
        x = window(mem, tokens, weight, pos, keep)
        grads = torch.autograd.grad(x, (mem_init, weight, pos), dx)
        return (x.detach(), *grads)

    def operators(mem, tokens, weight, pos, keep):
        emb = torch.nn.functional.embedding(tokens, weight) + pos
        return torch.cat([mem, emb if keep is None else emb * keep], dim=1)

    for name, a, b in zip(["x", "d mem", "d weight", "d pos"], run(ext.window), run(operators), strict=True):
        assert a.dtype == dtype and same_bits(a, b), name
    with torch.no_grad():
        assert same_bits(ext.window(mem_init.expand(B, -1, -1), tokens, weight, pos, keep),
                         operators(mem_init.expand(B, -1, -1), tokens, weight, pos, keep))
    bad = tokens.clone()
    bad[1, 5] = V
    with pytest.raises(RuntimeError, match=f"token id {V} is outside"):
        ext.window(mem_init.expand(B, -1, -1), bad, weight, pos, keep)
    # a frozen table: no gradient made for it, the others as before
    frozen = weight.detach()
    x = ext.window(mem_init.expand(B, -1, -1), tokens, frozen, pos, keep)
    d_mem, d_pos = torch.autograd.grad(x, (mem_init, pos), dx)
    y = operators(mem_init.expand(B, -1, -1), tokens, frozen, pos, keep)
    assert all(same_bits(a, b) for a, b in zip((d_mem, d_pos), torch.autograd.grad(y, (mem_init, pos), dx)))
    if keep is not None:   # the mask is a constant here; the model sends one that wants a gradient to Python
        with pytest.raises(RuntimeError, match="takes no gradient"):
            ext.window(mem_init.expand(B, -1, -1), tokens, weight, pos, keep.clone().requires_grad_(True))


def test_mixed_precision_and_narrow_dtypes_take_the_python_block():
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[0]
    x = torch.randn(2, 20, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(x.requires_grad_(), None, True).grad_fn.name() == "FusedBlockBackward"
    block16 = build_model(ModelConfig(arch="rmaat", **CFG)).to(torch.bfloat16).blocks[0]
    y = block16(x.detach().to(torch.bfloat16).requires_grad_(), None, True)
    assert y.grad_fn.name() == "FusedBlockBackward"


def test_rmaat_native_0_keeps_to_the_python_block(fresh_state, monkeypatch):
    monkeypatch.setenv(native.ENV, "0")
    assert native.extension() is None
    assert native.status() == "Python block (RMAAT_NATIVE=0)"


def test_a_bad_rmaat_native_value_is_refused_naming_it(fresh_state, monkeypatch):
    monkeypatch.setenv(native.ENV, "yes")
    with pytest.raises(ConfigError, match=r"RMAAT_NATIVE='yes': expected 0 .* 1 .* or unset"):
        native.extension()


def test_a_failed_build_falls_back_with_one_warning_or_is_an_error_when_required(fresh_state, monkeypatch):
    def no_compiler():
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.setattr(native, "_build", no_compiler)
    with pytest.warns(RuntimeWarning,
                      match="C\\+\\+ extension .*could not be built .*c\\+\\+: not found"
                            ".*Python block and draw and torch.s step run"):
        assert native.extension() is None
    assert "c++: not found" in native.status()
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[0]
    assert block(torch.randn(2, 20, 16, requires_grad=True), None, True).grad_fn.name() == "FusedBlockBackward"
    native._state.clear()
    monkeypatch.setenv(native.ENV, "1")
    with pytest.raises(ConfigError,
                       match="RMAAT_NATIVE=1 and the C\\+\\+ extension .*could not be built: .*c\\+\\+: not found"):
        native.extension()


def test_a_failed_compile_is_named_by_the_compilers_error_not_the_command_line():
    message = ("Error building extension 'x': [1/2] c++ -MMD -MF fused_block.o.d -isystem /torch/include -fPIC "
               "-std=c++20 -O2 -c /src/fused_block.cpp -o fused_block.o\nFAILED: fused_block.o\n"
               "c++ -MMD -MF fused_block.o.d -c /src/fused_block.cpp -o fused_block.o\n"
               "/src/fused_block.cpp:175:68: error: 'W' was not declared in this scope\n"
               "ninja: build stopped: subcommand failed.")
    assert native._why(RuntimeError(message)) == "/src/fused_block.cpp:175:68: error: 'W' was not declared in this scope"
    assert native._why(RuntimeError("Ninja is required to load C++ extensions")) == \
        "Ninja is required to load C++ extensions"


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next(tmp_path):
    """torch's build lock is a plain file: one left by a killed build made every later build
    wait forever. Under native's own lock it is known to be stale and removed. (A copy of the
    built extension in a cache of its own, so the real cache is not touched.)"""
    assert native.extension() is not None, native.status()
    name = native.extension_name()
    built = next(p.parent for p in Path(native._build_root()).glob(f"**/{name}/{name}*.so"))
    cache = tmp_path / "cache"
    shutil.copytree(built, cache / name)
    (cache / name / "lock").write_text("")
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(cache), RMAAT_NATIVE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "rmaat_model.native"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("C++ block"), proc.stdout
    assert not (cache / name / "lock").exists()


def special_values(shape, dtype, g):
    """Random values with signed zeros, NaN, infinities, values whose exponential underflows
    and subnormals mixed in: where a fused min / max / select could pick another operand."""
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    flat = x.view(-1)
    idx = torch.randperm(flat.numel(), generator=g)
    specials = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), -200.0, -1e-42, 1e-42, 1.0, -1.0, 700.0]
    for i, v in enumerate(specials):
        flat[idx[i::len(specials) * 4]] = v
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_the_fused_loops_give_the_operators_bits_special_values_included(dtype):
    """csrc/fused_block.cpp replaces chains of elementwise operators with one loop each on the
    CPU; they must round and choose operands as the operators do (rows of odd length, so the
    vector loops' scalar tails run too; a strided input, as the projection's row slices are)."""
    ext = native.extension()
    assert ext is not None, native.status()
    g = torch.Generator().manual_seed(3)
    B, D, W = 3, 8, 37
    qkv = special_values((B, 3 * D, W), dtype, g)
    x = qkv[:, D:2 * D]                                              # rows of a bigger tensor
    mask = (torch.rand(B, 1, W, generator=g) > 0.3).to(dtype)
    assert same_bits(ext.phi(x, None), phi_kernel(x))
    assert same_bits(ext.phi(x, mask), phi_kernel(x).mul_(mask))
    phi_rT = special_values((4, W), dtype, g)                        # phi(R), head size 4: rows r mod 4
    for m in (mask, None):
        fk, a = ext.phi_and_a(x, m, phi_rT, 4)
        ref = phi_kernel(x) if m is None else phi_kernel(x).mul_(m)
        assert same_bits(fk, ref)
        assert same_bits(a, (ref.view(-1, 4, W) + phi_rT).view(B, D, W))
    # a layout not in row-major order: exp2_'s last bit depends on where a value lies in memory
    # (its vector body and scalar tail differ), so the operators run, as in Python
    swapped = special_values((D, B, W), dtype, g).transpose(0, 1)
    assert same_bits(ext.phi(swapped, None), phi_kernel(swapped))
    with pytest.raises(RuntimeError):                               # phi(R) of the wrong head size, as Python
        ext.phi_and_a(x, mask, special_values((3, W), dtype, g), 4)
    with pytest.raises(RuntimeError, match="head size"):
        ext.phi_and_a(x, mask, phi_rT, 0)
    d, f = special_values((B, D, W), dtype, g), special_values((B, D, W), dtype, g)
    out = torch.empty(B, 3 * D, W, dtype=dtype)
    ext.mul_dphi_out(out[:, D:2 * D], d, f)
    assert same_bits(out[:, D:2 * D], d * torch.clamp_max(f, torch.tensor(1.0, dtype=dtype)))
    inplace = d.clone()
    ext.mul_dphi_out(inplace, inplace, f)                            # astro_backward's dq.mul_(dphi_q)
    assert same_bits(inplace, d * torch.clamp_max(f, torch.tensor(1.0, dtype=dtype)))
    with pytest.raises(RuntimeError, match="more than one element"):   # as ATen's out= refuses it
        ext.mul_dphi_out(torch.empty(B, 1, W, dtype=dtype).expand(B, D, W), d, f)


def odd_exponents(n: int, g: torch.Generator) -> torch.Tensor:
    """n inputs <= 0 whose phi exponents (x log2 e, as phi_kernel rounds it) ATen's float32
    exp2_ rounds differently in its vector body and in its scalar tail (a tensor of 4 elements is
    all tail at any vector width): wherever one of them lands on the other's position, its bits
    show."""
    x = -torch.rand(4096, generator=g) * 16
    e = x * torch.tensor(LOG2E, dtype=torch.float32)
    body = torch.exp2(e)
    tail = torch.cat([torch.exp2(e[i:i + 4]) for i in range(0, e.numel(), 4)])   # under any vector round
    odd = x[body.view(torch.int32) != tail.view(torch.int32)]
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":   # there both are std::exp2
        assert odd.numel() > 100, odd.numel()   # about 6 % of them
    pool = odd if odd.numel() else x
    return pool[torch.randint(pool.numel(), (n,), generator=g)]


@pytest.mark.parametrize("shape", [(3, 8, 37), (5, 4, 33), (2, 16, 45), (1, 4, 7)],
                         ids=["tail-24", "tail-20", "no-tail", "all-tail"])
def test_phi_by_rows_gives_exp2_s_bits_by_position(shape):
    """For float32 the C++ block makes phi's two loops and ATen's exp2_ between them one pass per
    row (csrc/fused_block.cpp, phi by rows), with exp2_'s two functions by position: its vector
    body's and, for the last n mod 32 of the tensor, its scalar tail's. On inputs whose exponents
    the two round differently, at tensor sizes with and without a tail and rows that cross the
    body's end, the bits are the operators' (the Python block's) with and without the bias, the
    mask and phi(R); and the pass is taken: its one check is counted as matched."""
    ext = native.extension()
    assert ext is not None, native.status()
    enabled, avx512, _, _ = ext.checked_products(forget=True)
    g = torch.Generator().manual_seed(12)
    B, D, W = shape
    x = odd_exponents(B * D * W, g).view(B, D, W)
    mask = (torch.rand(B, 1, W, generator=g) > 0.3).float()
    phi_rT = torch.rand(D if D < 4 else 4, W, generator=g)
    m = phi_rT.shape[0]
    bias = torch.zeros(D)   # x + 0 is x (-0 aside): the exponents stay the odd ones
    try:
        for on in (True, False):
            ext.checked_products(on)
            assert same_bits(ext.phi(x, None), phi_kernel(x))
            fk, a = ext.phi_and_a(x, mask, phi_rT, m, bias)
            ref = phi_kernel(x).mul_(mask)
            assert same_bits(fk, ref)
            assert same_bits(a, (ref.view(-1, m, W) + phi_rT).view(B, D, W))
            if on and avx512:
                counts = ext.checked_products()[2:]
                assert sum(counts) == 1                      # phi by rows, checked once
                if torch.backends.cpu.get_cpu_capability() == "AVX512":
                    assert counts == (1, 0)                  # and matched: ATen's exp2_ is Sleef's 16-wide one
    finally:
        ext.checked_products(enabled)


def normaliser_reference(dout, C, yT, nh):
    """astro_backward's dY by the operators kernels.astro_backward uses: (B, nh, m + 1, Wq)."""
    B, Wq = dout.shape[0], dout.shape[2]
    m = dout.shape[1] // nh
    ref = torch.empty(B, nh, m + 1, Wq)
    torch.div(dout.reshape(B, nh, m, Wq), C.view(B, nh, 1, Wq), out=ref[:, :, :m])
    torch.sum(ref[:, :, :m] * yT.view(B, nh, m, Wq), dim=2, keepdim=True, out=ref[:, :, m:]).neg_()
    return ref


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_the_normaliser_gradient_sums_in_aten_s_order(layout):
    """astro_backward's dY = [dout / C | -sum over the head's rows of (dout / C) yT]: the block
    makes it in one loop whose sum adds the products in ATen's order for each column (a cascade
    for the columns in ATen's vector blocks, four interleaved partial sums for the rest), where one
    check per layout has seen ATen's bits. Head sizes across the cascade's runs of 16 rows and
    the partials' groups of 4, windows under and over a vector, the transposed gradient the
    block gets (dout's rows contiguous) and a contiguous one; values spread over powers of ten,
    so that almost every sum's bits depend on its order: always the operators' bits, and on
    Intel's CPUs the loop takes every window wider than one column (a one-column window is a
    reduction over contiguous rows, which ATen sums in other orders: the check refuses it where
    they differ)."""
    ext = native.extension()
    assert ext is not None, native.status()
    _, avx512, _, _ = ext.checked_products(forget=True)
    g = torch.Generator().manual_seed(13)
    windows = [1, 2, 5, 8, 9, 20, 33, 136]
    heads = [(2, 3), (4, 16), (2, 17), (1, 33)]
    for nh, m in heads:
        for Wq in windows:
            B = 3
            dout = torch.randn(B, nh * m, Wq, generator=g) * 10.0 ** torch.randint(-4, 5, (B, nh * m, Wq),
                                                                                    generator=g)
            if layout == "transposed":
                dout = dout.transpose(1, 2).contiguous().transpose(1, 2)
            C = torch.rand(B * nh, 1, Wq, generator=g) + 0.5
            yT = torch.randn(B * nh, m, Wq, generator=g)
            before = ext.checked_products()[2:]
            ref = normaliser_reference(dout, C, yT, nh)
            assert same_bits(ext.normaliser_grad(dout, C, yT, nh), ref), (nh, m, Wq)
            after = ext.checked_products()[2:]
            assert after[0] + after[1] == before[0] + before[1] + 1   # one check per layout
            if avx512 and intel_at_avx512() and Wq > 1:
                assert after[0] == before[0] + 1, (nh, m, Wq)       # matched: the loop made it


def test_the_normaliser_gradient_refuses_what_its_loop_cannot_take():
    """A gradient laid out with overlapping elements (a stride of 0) goes to ATen's operators,
    whose bits it keeps; a head count that does not divide the rows is one clear error."""
    ext = native.extension()
    assert ext is not None, native.status()
    g = torch.Generator().manual_seed(15)
    dout = torch.randn(2, 1, 9, generator=g).expand(2, 6, 9)
    C, yT = torch.rand(4, 1, 9, generator=g) + 0.5, torch.randn(4, 3, 9, generator=g)
    assert same_bits(ext.normaliser_grad(dout, C, yT, 2), normaliser_reference(dout, C, yT, 2))
    for nh in (0, 4):
        with pytest.raises(RuntimeError, match="nh > 0 dividing its rows"):
            ext.normaliser_grad(dout, C, yT, nh)


def test_the_fused_loops_split_among_threads_give_the_same_bits():
    """At two intra-op threads the loops split their rows between them (sizes above ATen's
    grain of 32768 values); a block at that size is the Python block to the bit."""
    ext = native.extension()
    assert ext is not None, native.status()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(4)
        B, D, W = 4, 64, 301
        x = special_values((B, 3 * D, W), torch.float32, g)[:, D:2 * D]
        mask = (torch.rand(B, 1, W, generator=g) > 0.3).float()
        assert same_bits(ext.phi(x, mask), phi_kernel(x).mul_(mask))
        d, f = torch.randn(B, D, W, generator=g), torch.rand(B, D, W, generator=g) * 2
        out = torch.empty(B, D, W)
        ext.mul_dphi_out(out, d, f)
        assert same_bits(out, d * torch.clamp_max(f, torch.tensor(1.0)))
        cfg = dict(CFG, d_model=64, n_heads=4, max_len=512, segment_len=296, n_mem=5)
        assert_padded_block_is_the_python_blocks(cfg, B, 2, 200, g)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("p", [0.1, 0.5, 1 / 65536, 0.999, 1 - 2 ** -18])   # the last: p rounded to 1 - 2^-16
def test_a_dropout_draw_is_the_same_on_both_paths(dtype, p):
    """dropout_masks draws and forms its {0, scale} values in C++ where the extension is built:
    the same values as random_ and the operators give, and the same RNG state after them."""
    ext = native.extension()
    assert ext is not None, native.status()
    calls = []

    class Spy:   # the extension, its dropout_draw counted
        def __getattr__(self, name):
            return getattr(ext, name)

        def dropout_draw(self, *args):
            calls.append(args)
            return ext.dropout_draw(*args)

    like = torch.empty(0, dtype=dtype)
    rows = (9, 5, 5, 3, 3)                                           # an odd count of values: a partial last draw
    torch.manual_seed(11)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "extension", lambda: Spy())
        fused = dropout_masks(rows, 3, 7, p, like, True)
    assert len(calls) == 1 and calls[0][0] == 3 * 7 * sum(rows)
    after = torch.rand(1)
    torch.manual_seed(11)
    with native.disabled():
        ref = dropout_masks(rows, 3, 7, p, like, True)
    assert torch.equal(torch.rand(1), after)
    for a, b in zip(fused, ref, strict=True):
        assert a.dtype == dtype and same_bits(a, b)
    kept = torch.cat([m.reshape(-1) for m in fused])
    scale = 65536 / (65536 - min(round(p * 65536), 65535))
    assert set(kept.unique().tolist()) <= {0.0, torch.tensor(scale, dtype=dtype).item()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_the_draw_takes_random_s_values_and_leaves_the_generator_where_random_does(dtype):
    """dropout_draw reads the default generator's MT19937 state itself, in blocks: its values
    must be those of random_'s int64 draw followed by dropout_keep, and the generator's whole
    state after it torch's own, at every place in the generator's 624-word cycle a draw can
    start (fresh from a seed, after an odd count of words) and for sizes that end inside a
    value, exactly on a regeneration, and past several."""
    ext = native.extension()
    assert ext is not None, native.status()
    q = 6554                                                          # p = 0.1
    sizes = (0, 1, 3, 4, 5, 1247, 1248, 1249, 2496, 4 * 512 + 3, 50_001, 400_000)
    for seed in (0, 1, 2 ** 40 + 5):
        torch.manual_seed(seed)
        for n in sizes:
            before = torch.get_rng_state()
            fused = ext.dropout_draw(n, q - 32768, 65536 / (65536 - q), dtype)
            after = torch.get_rng_state()
            torch.set_rng_state(before)
            bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
            assert torch.equal(torch.get_rng_state(), after), (seed, n)
            assert same_bits(fused, ext.dropout_keep(bits, n, q - 32768, 65536 / (65536 - q), dtype)), (seed, n)
            torch.randint(0, 2 ** 31, (n % 5 + 1,), dtype=torch.int32)   # one 32-bit word each: an odd offset
    with pytest.raises(RuntimeError, match="n must be >= 0"):
        ext.dropout_draw(-1, 0, 1.0, dtype)


def test_the_draw_from_a_generator_of_its_own_is_random_s_from_it():
    """A batch shard's generator (kernels.drawing_from): the draw takes random_'s values from it
    and leaves it where random_ does, and leaves the default generator alone."""
    ext = native.extension()
    assert ext is not None, native.status()
    q = 6554
    torch.manual_seed(3)
    default = torch.get_rng_state()
    for n in (5, 1249, 50_001):
        g, h = torch.Generator().manual_seed(2 ** 40 + n), torch.Generator().manual_seed(2 ** 40 + n)
        torch.randint(0, 2 ** 31, (n % 7 + 1,), dtype=torch.int32, generator=g)   # an odd offset
        torch.randint(0, 2 ** 31, (n % 7 + 1,), dtype=torch.int32, generator=h)
        fused = ext.dropout_draw(n, q - 32768, 65536 / (65536 - q), torch.float32, g)
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None, generator=h)
        assert same_bits(fused, ext.dropout_keep(bits, n, q - 32768, 65536 / (65536 - q), torch.float32)), n
        assert torch.equal(g.get_state(), h.get_state()), n
    assert torch.equal(torch.get_rng_state(), default)


def test_the_cpp_block_is_the_python_block_to_the_bit_at_the_demos_width():
    """The grid above at the demo's sizes (d_model 64, 4 heads, 136-wide windows, one padded
    row): full vectors in every fused loop, not only their tails."""
    assert native.extension() is not None, native.status()
    cfg = dict(CFG, d_model=64, n_heads=4, d_ff=128, max_len=512, segment_len=128, n_mem=8, dropout=0.1)
    assert_padded_block_is_the_python_blocks(cfg, 2, 1, 90, torch.Generator().manual_seed(2))


@pytest.mark.parametrize("method", ["amrb", "bptt"])
def test_every_fused_loop_runs_in_a_training_step_none_falls_back_to_the_operators(method):
    """The loops take only the layouts they can write (rows_ok, row_major, writable); any other
    goes back to the operators, with the same bits. That fallback must not be what the model's
    own layouts get: through a whole step at the demo's width (padding, dropout, the last
    block's memory rows) no clamp runs, the first operator of phi's chain and of the phi'
    product's, each of which a loop replaces (the phi' product's once fell back wherever it
    wrote into the rows of the Q, K, V gradient), and no embedding, which the window's pass
    replaces."""
    from torch.profiler import ProfilerActivity, profile
    assert native.extension() is not None, native.status()
    cfg = dict(CFG, d_model=64, n_heads=4, d_ff=128, max_len=512, segment_len=128, n_mem=8, dropout=0.1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", **cfg))
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(1, cfg["vocab_size"], (3, 300), generator=g)
    tokens[1, 170:] = 0                                               # ragged: two segments against three
    labels = torch.randint(0, cfg["n_classes"], (3,), generator=g)
    forward_backward(model, tokens, labels, method=method)           # warm: nothing first-call in the profile
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        forward_backward(model, tokens, labels, method=method)
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get("torch::autograd::CppNode<rmaat::FusedBlock>", 0) > 0   # the C++ block ran
    assert "aten::clamp_max" not in calls and "aten::clamp_min" not in calls, calls
    assert "aten::embedding" not in calls and "aten::embedding_dense_backward" not in calls, calls   # the window's


def assert_padded_block_is_the_python_blocks(cfg: dict, B: int, row: int, end: int, g: torch.Generator) -> None:
    """An rmaat block of ``cfg`` on a window of B sequences, ``row`` padded from ``end`` on, with
    dropout: values and every gradient of the C++ block are the Python block's to the bit."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch="rmaat", **cfg)).blocks[0]
    W, D = cfg["segment_len"] + cfg["n_mem"], cfg["d_model"]
    x = torch.randn(B, W, D, generator=g)
    key_mask = torch.ones(B, W, dtype=torch.bool)
    key_mask[row, end:] = False
    masks = dropout_masks((W, W), B, D, cfg["dropout"], x, True)
    w = torch.randn(B, W, D, generator=g)
    out = block_run(block, x, key_mask, False, None, masks, w)
    with native.disabled():
        ref = block_run(block, x, key_mask, False, None, masks, w)
    for a, b in zip(out, ref, strict=True):
        assert same_bits(a, b)


@pytest.mark.parametrize("arch,dropout,precision", [("rmt", 0.1, "fp32"), ("rmt", 0.1, "bf16"), ("rmaat", 0.1, "bf16"),
                                                    ("rmt", 0.0, "fp32"), ("rmaat", 0.0, "fp32"),
                                                    ("rmaat", 0.0, "bf16")])
def test_train_loads_the_extension_before_its_first_step_wherever_a_step_uses_it(tmp_path, monkeypatch, arch,
                                                                                 dropout, precision):
    """On the CPU every run's step uses the extension: the block (RMAAT in float32), the
    dropout draws (every arch), AdamW's step (float32 weights, which bf16 runs keep).
    ``rmaat train`` loads it before anything is written, so a first build is neither inside a
    step nor on the run's clock."""
    from astro_rmaat.config import from_dict, to_dict
    from rmaat_model.train import train
    from rmaat_model.train_config import TrainConfig

    callers = []
    real = native.extension

    def recorded():
        callers.append(sys._getframe(1).f_code.co_name)
        return real()

    monkeypatch.setattr(native, "extension", recorded)
    data = to_dict(TrainConfig())
    data.update(task="recall", max_len=32, batch_size=4, steps=1, eval_every=1, seed=3, device="cpu",
                precision=precision)
    data["model"].update(arch=arch, d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=dropout,
                         segment_len=8, n_mem=2, retention="none")
    train(from_dict(TrainConfig, data), tmp_path / "run", progress=False)
    assert callers[:1] == ["_build"], callers[:3]
    assert "step" in callers   # optim.AdamW's


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_the_draws_loop_keeps_exactly_the_pieces_the_formula_keeps_for_every_piece(dtype):
    """Every one of the 65 536 16-bit pieces, at thresholds from none dropped to all but one
    dropped: the loop's {0, scale} is the Python formula's, bit for bit."""
    ext = native.extension()
    assert ext is not None, native.status()
    pieces = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    bits = pieces.view(torch.int64)                                  # 16 384 draws holding every piece once
    for q in (0, 1, 6554, 32767, 32768, 65534, 65535):
        scale = 65536 / (65536 - q)
        fused = ext.dropout_keep(bits, 65536, q - 32768, scale, dtype)
        ref = pieces.to(dtype).sub_(torch.tensor(q - 32769, dtype=dtype)).mul_(torch.tensor(scale, dtype=dtype))
        ref = ref.clamp_(0.0, scale)
        assert same_bits(fused, ref), q
        assert int((fused == 0).sum()) == q                           # exactly q of the 65 536 dropped
