"""The hand-fused CPU training pieces (nanochat.fused) against the plain ops they replace: values and
gradients, in fp32 and bf16, and a whole model's loss and gradients with and without them."""

import pytest
import torch
import torch.nn.functional as F

from nanochat import fused, gpt
from nanochat.gpt import GPT, GPTConfig


def value_and_grad(fn, x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fn(x) and the gradient of sum(fn(x) * weights) (a different gradient per element) wrt x."""
    x = x.clone().requires_grad_()
    y = fn(x)
    (y.float() * weights).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 50, 256), (2, 40, 2, 128)])
def test_rms_norm_forward_is_f_rms_norms_bit_for_bit_and_backward_matches(shape, dtype):
    torch.manual_seed(0)
    x, weights = (torch.randn(shape) * 3).to(dtype), torch.randn(shape)
    y, grad = value_and_grad(fused.RMSNorm.apply, x, weights)
    y_plain, grad_plain = value_and_grad(lambda t: F.rms_norm(t, (t.size(-1),)), x, weights)
    assert y.dtype == dtype and grad.dtype == dtype
    assert torch.equal(y, y_plain)
    torch.testing.assert_close(grad, grad_plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_squared_matches_relu_then_square(dtype):
    torch.manual_seed(0)
    x, weights = torch.randn(4, 30, 64).to(dtype), torch.randn(4, 30, 64)
    y, grad = value_and_grad(fused.ReluSquared.apply, x, weights)
    y_plain, grad_plain = value_and_grad(lambda t: F.relu(t).square(), x, weights)
    assert torch.equal(y, y_plain)
    torch.testing.assert_close(grad, grad_plain)


@pytest.mark.parametrize("vocab, dtype", [(300, torch.float32), (4096, torch.float32), (300, torch.bfloat16)])
def test_softcapped_loss_matches_tanh_then_cross_entropy(vocab, dtype):
    """Over more rows than one chunk holds (and a part-filled last chunk), with ignored targets."""
    torch.manual_seed(0)
    raw, weights = (torch.randn(1000, vocab) * 20).to(dtype), torch.rand(1000)
    targets = torch.randint(0, vocab, (1000,))
    targets[::7] = -1
    loss, grad = value_and_grad(lambda t: fused.SoftcappedCrossEntropy.apply(t, targets, 15.0), raw, weights)
    loss_plain, grad_plain = value_and_grad(
        lambda t: F.cross_entropy(15 * torch.tanh(t.float() / 15), targets, ignore_index=-1, reduction="none"),
        raw, weights)
    torch.testing.assert_close(loss, loss_plain)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, grad_plain)
    assert (loss[::7] == 0).all() and (grad[::7] == 0).all()


def test_model_trains_on_the_same_loss_and_gradients_as_with_the_plain_ops(monkeypatch):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=300, sequence_len=64, model_dim=128))
    model.init_weights()
    for block in model.transformer.h:  # zero-initialized projections would leave the MLP without gradient
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
    x, y = torch.randint(0, 300, (2, 64)), torch.randint(0, 300, (2, 64))
    y[0, :10] = -1

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    loss, grads = loss_and_grads()
    monkeypatch.setattr(fused, "applies", lambda t: False)  # norm and relu_squared: the plain ops
    monkeypatch.setattr(gpt, "softcapped_cross_entropy", lambda logits, targets: F.cross_entropy(
        15 * torch.tanh(logits.float() / 15), targets, ignore_index=-1, reduction="none"))
    loss_plain, grads_plain = loss_and_grads()
    torch.testing.assert_close(loss, loss_plain)
    for grad, grad_plain in zip(grads, grads_plain, strict=True):
        torch.testing.assert_close(grad, grad_plain, rtol=1e-4, atol=1e-6)
