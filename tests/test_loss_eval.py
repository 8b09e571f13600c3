"""Bits per byte against upstream 48abd7d's evaluate_bpb (../shared/anchors) on the same weights and batches:
upstream's function over upstream's loss (the head at every position, 15 tanh(x / 15) in fp32, then
F.cross_entropy, as its GPT.forward writes it) against ours (the CPU-fused loss), with ignored targets and
special tokens that count no bytes."""

import pytest
import torch
import torch.nn.functional as F

from conftest import upstream_module
from nanochat.compute import Compute
from nanochat.gpt import GPT, GPTConfig
from nanochat.loss_eval import evaluate_bpb


class UpstreamLossModel(torch.nn.Module):
    """Our weights behind upstream's interface, with upstream's loss."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def get_device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, x: torch.Tensor, targets: torch.Tensor, loss_reduction: str = "mean") -> torch.Tensor:
        logits = self.model.lm_head(self.model.hidden(x))[..., :self.model.config.vocab_size].float()
        logits = 15 * torch.tanh(logits / 15)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                               reduction=loss_reduction)


def test_bits_per_byte_equal_upstreams_evaluate_bpb(monkeypatch):
    upstream = upstream_module("loss_eval", "bits-per-byte")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # fp32 on both sides: upstream's function autocasts nothing
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=300, sequence_len=64, model_dim=128))
    model.init_weights()
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)  # logits far from uniform, some past the soft cap
    token_bytes = torch.randint(1, 5, (300,))
    token_bytes[:3] = 0  # special tokens: neither loss nor bytes
    batches = []
    for _ in range(3):
        x, y = torch.randint(0, 300, (2, 64)), torch.randint(0, 300, (2, 64))
        y[0, :9] = -1
        batches.append((x, y))
    ours = evaluate_bpb(model, batches, token_bytes, Compute(torch.device("cpu")))
    theirs = upstream.evaluate_bpb(UpstreamLossModel(model), batches, len(batches), token_bytes)
    assert ours == pytest.approx(theirs, rel=1e-6)
