"""The optimizers: Muon's batched update against a per-matrix reference written down, and the precision choice
on a CPU."""

import pytest
import torch

from nanochat import compute
from nanochat.gpt import GPT, GPTConfig
from nanochat.muon import Muon, newton_schulz


def reference_newton_schulz(g: torch.Tensor) -> torch.Tensor:
    """The quintic iteration as written down, one matrix, in the precision Muon picks for this CPU."""
    x = g.bfloat16() if compute.bf16_on_cpu("newton_schulz") else g.float()
    x = x.mT if g.size(0) > g.size(1) else x
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        a = x @ x.mT
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return (x.mT if g.size(0) > g.size(1) else x).to(g.dtype)


def reference_muon_step(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                        lr: float, momentum: float) -> None:
    """Muon as written down (Nesterov momentum, then Newton-Schulz), one matrix at a time."""
    for p, g, buf in zip(params, grads, bufs):
        buf.mul_(momentum).add_(g, alpha=1 - momentum)
        update = reference_newton_schulz(g + momentum * (buf - g))
        p.add_(update, alpha=-lr * max(1.0, p.size(-2) / p.size(-1)) ** 0.5)


@pytest.mark.parametrize("limit, tolerance", [("AVX2", 1e-6), ("ALL", 1e-3)], ids=["fp32", "bf16-where-fast"])
def test_batched_muon_step_equals_one_matrix_at_a_time(monkeypatch, limit, tolerance):
    """Muon orthogonalizes the matrices of one shape together: the same update as one matrix at a time, up to
    fp32 rounding (in bf16, where the CPU multiplies bf16 fast, up to bf16's: updates are 0.02 x O(1))."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    torch.manual_seed(0)
    shapes = [(64, 64), (64, 64), (256, 64), (64, 256), (64, 64), (256, 64)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    expected = [p.detach().clone() for p in params]
    bufs = [torch.zeros(s) for s in shapes]
    muon = Muon(params, lr=0.02, momentum=0.95)
    for _ in range(3):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        muon.step()
        reference_muon_step(expected, grads, bufs, 0.02, 0.95)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=tolerance)


@pytest.mark.parametrize("amx, avx512_bf16, limit, expected", [
    (True, True, "ALL", "amx"), (True, True, "avx512_core_amx", "amx"),  # a Xeon from Sapphire Rapids
    (True, True, "AVX512_CORE_BF16", "avx512_bf16"),  # the same, oneDNN limited below AMX: as a Zen 4 multiplies
    (False, True, "ALL", "avx512_bf16"),  # AMD Zen 4 and 5, Intel Cooper Lake
    (True, True, "AVX512_CORE", "emulated"), (True, True, "AVX2", "emulated"),  # limited below bf16 instructions
    (False, False, "ALL", "emulated"),  # AVX2-only laptops, ARM
])
def test_precision_per_path_follows_how_the_cpu_multiplies_bf16(monkeypatch, amx, avx512_bf16, limit, expected):
    """Training and Newton-Schulz in bf16 where bf16 matmuls run on AMX or AVX512_BF16 (about 2x fp32's there);
    where oneDNN converts bf16 in software (34 against 290 GFLOP/s for fp32 with AVX2, measured) all in fp32.
    Scoring and decoding in fp32 on every CPU."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert compute.cpu_bf16() == expected
    assert expected in compute.cpu_description()
    cpu = compute.Compute(torch.device("cpu"))
    for path, bf16 in (("train", expected != "emulated"), ("score", False), ("decode", False)):
        with cpu.autocast(path):
            assert torch.is_autocast_enabled("cpu") is bf16, path
    assert compute.bf16_on_cpu("newton_schulz") is (expected != "emulated")
    course = GPT(GPTConfig.from_depth(1, 64, 16))  # what base_train's log says it trains in
    assert cpu.precision("train", course) == f"{'fp32' if expected == 'emulated' else 'bf16'} " \
                                             f"(bf16 matmuls on this CPU: {expected})"
    assert cpu.precision("train", GPT(GPTConfig.from_depth(1, 64, 16, recipe="2026"))).startswith("fp32 (")
    assert newton_schulz(torch.randn(8, 8)).dtype == torch.float32  # returned in the gradient's dtype
