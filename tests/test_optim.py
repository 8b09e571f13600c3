"""The optimizers: Muon's batched update against a per-matrix reference written down, and the precision choice
on a CPU."""

import pytest
import torch

from nanochat import compute
from nanochat.muon import Muon, newton_schulz


def reference_newton_schulz(g: torch.Tensor) -> torch.Tensor:
    """The quintic iteration as written down, one matrix, in the precision Muon picks for this CPU."""
    x = g.bfloat16() if compute.cpu_has_amx() else g.float()
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


@pytest.mark.parametrize("limit, tolerance", [("AVX2", 1e-6), ("ALL", 1e-3)], ids=["fp32", "bf16-where-amx"])
def test_batched_muon_step_equals_one_matrix_at_a_time(monkeypatch, limit, tolerance):
    """Muon orthogonalizes the matrices of one shape together: the same update as one matrix at a time, up to
    fp32 rounding (in bf16, where AMX makes it the choice, up to bf16's: updates are 0.02 x O(1))."""
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


@pytest.mark.parametrize("limit, uses_amx", [("AVX2", False), ("AVX512_CORE_BF16", False), ("ALL", True),
                                             ("avx512_core_amx", True)])
def test_bf16_only_where_onednn_may_use_amx(monkeypatch, limit, uses_amx):
    """A oneDNN limit below AMX (ONEDNN_MAX_CPU_ISA) makes bf16 matmuls slow (34 against 290 GFLOP/s for fp32
    with AVX2, measured): training then stays in fp32, model and Muon."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert compute.cpu_has_amx() is uses_amx
    cpu = compute.Compute(torch.device("cpu"))
    with cpu.autocast():
        assert torch.is_autocast_enabled("cpu") is uses_amx
    assert newton_schulz(torch.randn(8, 8)).dtype == torch.float32  # returned in the gradient's dtype

