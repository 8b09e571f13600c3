"""Hand-fused forward and backward passes of the model's element-wise pieces, for eager training on a CPU.

gpt.py writes each piece as plain ops (`norm`, `relu_squared`, `softcapped_cross_entropy`) and calls these
instead where they pay: on a CPU, when a gradient is wanted, outside torch.compile. There autograd's own
backward of those ops walks the activations several times more than needed, and that walk through memory is a
third of an fp32 d4 step that upstream's torch.compile fuses away (measured when side_by_side.py had an fp32
train row; bench/cpu_precision.py times fp32 training now). On a GPU, or compiled, the plain ops are kernels
or get fused, and at inference there is no backward to save: the plain ops run. The forward passes give the
plain ops' numbers bit for bit, except the loss (a log-sum-exp per row rather than log_softmax: within float
rounding); tests/test_fused.py holds every value and gradient against the plain ops.
"""

import ctypes
import ctypes.util
import functools

import torch

LOSS_CHUNK = 2 ** 18  # logits per pass of SoftcappedCrossEntropy: 1 MB of fp32, well inside L2


def applies(x: torch.Tensor) -> bool:
    """Whether the fused versions pay for `x`: eager CPU autograd."""
    return x.requires_grad and x.is_cpu and not torch.compiler.is_compiling()  # False at once when decoding


@functools.cache
def keep_freed_memory() -> None:
    """For CPU training (train_loop calls it): glibc's malloc keeps the blocks a step frees for the next step, up
    to 1 GiB. By default it maps blocks over 32 MB (a d4 step's logits) afresh and gives freed memory back to the
    system, which zeroes every page again on first touch: 10 % of a 2026 d4 step on a 2-core CPU (737 against
    659 ms). Elsewhere than glibc: nothing."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "mallopt"):
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks under 1 GiB come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: up to 1 GiB of free heap kept


class RMSNorm(torch.autograd.Function):
    """y = x / sqrt(mean(x^2) + eps) over the last dim, computed in fp32 (F.rms_norm's upcast and eps).
    Backward: dx = (g - y mean(g y)) / sqrt(mean(x^2) + eps), four passes instead of a dozen."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        inv_rms = xf.pow(2).mean(-1, keepdim=True).add_(torch.finfo(torch.float32).eps).rsqrt_()
        y = xf * inv_rms
        ctx.save_for_backward(y, inv_rms)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        y, inv_rms = ctx.saved_tensors
        g = grad.float()
        return g.addcmul(y, (g * y).mean(-1, keepdim=True), value=-1.0).mul_(inv_rms).to(grad.dtype)


class KeyWindows(torch.autograd.Function):
    """Keys (or values) x (B, T, H, D) as n chunks of T / n, each after the chunk before it (zeros before the
    first): (B n, 2 T / n, H, D), one copy each way. Slices and cat would leave autograd a zero-filled tensor
    per slice to add up (a third of the time of attention.banded_attention's backward at d4)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        B, T = x.shape[:2]
        chunks = x.reshape(B, n, T // n, *x.shape[2:])
        out = x.new_empty(B, n, 2 * (T // n), *x.shape[2:])
        out[:, :, T // n:] = chunks
        out[:, 1:, :T // n] = chunks[:, :-1]
        out[:, 0, :T // n] = 0
        ctx.n = n
        return out.flatten(0, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        n, C = ctx.n, grad.size(1) // 2
        grad = grad.reshape(-1, n, 2 * C, *grad.shape[2:])
        grad_x = grad[:, :, C:].clone()
        grad_x[:, :-1] += grad[:, 1:, :C]
        return grad_x.flatten(1, 2), None


class ReluSquared(torch.autograd.Function):
    """relu(x)^2, keeping relu(x) for the backward: dx = 2 relu(x) g (two passes instead of four)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r.square()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (grad * r).mul_(2.0)


class SoftcappedCrossEntropy(torch.autograd.Function):
    """Per row, cross_entropy(z, target) with z = cap tanh(logits / cap) in fp32, 0 where the target is -1.

    Each pass runs over LOSS_CHUNK logits at a time, which stay in the L2 cache instead of going through memory
    ten times (7 against 18 ms for 1,024 tokens x 4,096 on a 2-core CPU, forward and backward), and the
    backward keeps one (tokens, vocab) tensor, z, instead of two. dz/dx = 1 - tanh^2 = 1 - (z / cap)^2.
    Pays at inference too (bits per byte): forward only."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
        n, vocab = logits.shape
        capped = torch.empty(n, vocab, dtype=torch.float32)
        lse, picked = torch.empty(n, dtype=torch.float32), torch.empty(n, 1, dtype=torch.float32)
        safe, valid = targets.clamp(min=0)[:, None], targets >= 0
        rows = max(1, LOSS_CHUNK // vocab)
        for r in range(0, n, rows):  # z as GPT.logits computes it, bit for bit
            z = torch.div(logits[r:r + rows].float(), cap, out=capped[r:r + rows]).tanh_().mul_(cap)
            torch.logsumexp(z, -1, out=lse[r:r + rows])
            torch.gather(z, 1, safe[r:r + rows], out=picked[r:r + rows])
        ctx.save_for_backward(capped, safe, lse, valid)
        ctx.cap, ctx.dtype, ctx.rows = cap, logits.dtype, rows
        return (lse - picked[:, 0]).masked_fill_(~valid, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        capped, safe, lse, valid = ctx.saved_tensors
        grad = (grad * valid)[:, None]
        out, rows = torch.empty_like(capped), ctx.rows
        scratch = torch.empty(rows, capped.size(1), dtype=torch.float32)  # no fresh 1 MB per chunk
        for r in range(0, capped.size(0), rows):
            z, g, o = capped[r:r + rows], grad[r:r + rows], out[r:r + rows]
            torch.sub(z, lse[r:r + rows, None], out=o).exp_().mul_(g)  # g softmax(z)
            o.scatter_add_(1, safe[r:r + rows], -g)  # minus g at the target
            o.addcmul_(torch.mul(o, z, out=scratch[:len(z)]), z, value=-1.0 / ctx.cap ** 2)  # times dz/dx
        return out.to(ctx.dtype), None, None
