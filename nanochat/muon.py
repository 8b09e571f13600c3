"""Muon: SGD with Nesterov momentum whose update is orthogonalized by a Newton-Schulz iteration.

For 2-D weight matrices only (the transformer blocks); embeddings and the head use AdamW.
Under DDP the gradients are already averaged across ranks, so every rank computes the same update.

A param group with the key "beta2" takes the 2026 recipe's variant (upstream 92d63d4's Muon): MuonEq row
equilibration, Polar Express instead of Newton-Schulz, Muon+ renormalization, NorMuon variance reduction and
cautious weight decay (the group's "weight_decay"). State is per parameter, so a checkpoint stores it by name.
"""

import torch

from nanochat.compute import bf16_on_cpu

# Course: one quintic, its slope at zero maximized (upstream 48abd7d).
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
# 2026: Polar Express, one quintic per step (arXiv 2505.16932: 5 iterations, safety factor 2e-2, cushion 2).
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def gram_quintics(X: torch.Tensor, coefficients: list[tuple[float, float, float]]) -> torch.Tensor:
    """quintic_iteration's steps on the Gram matrix of X (matrices, rows, cols): each step multiplies X by
    B = a + b A + c A A, a polynomial in A = X X^T, so X_k = P X with P = B_k ... B_1 and A_k+1 = B A_k B (all
    polynomials in the first A: they commute), rows x rows products until the last one, P X."""
    A, P = X @ X.mT, None
    for i, (a, b, c) in enumerate(coefficients):
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        B.diagonal(dim1=-2, dim2=-1).add_(a)
        P = B if P is None else B @ P
        if i < len(coefficients) - 1:
            A = B @ A @ B
    return P @ X


def quintic_iteration(X: torch.Tensor, coefficients: list[tuple[float, float, float]], gram: bool = False
                      ) -> torch.Tensor:
    """X <- a X + (b A + c A A) X with A = X X^T, per (a, b, c), for X (matrices, rows, cols) with rows <= cols
    scaled to spectral norm <= 1. `gram` (2026): X with at least twice as many columns as rows goes through
    gram_quintics, two steps and then the rest (a third fewer flops at cols = 4 rows: 14.4 against 22.4 ms for 4
    of 256 x 1024 on a 2-core CPU). From X again after two steps, because the Gram matrix squares X's condition:
    off an fp64 iteration by 7.6e-5 of the largest value on d6 gradients (the direct iteration 7.4e-5, all five
    steps on one Gram matrix 1.8e-3)."""
    if gram and X.size(-1) >= 2 * X.size(-2):
        for part in (coefficients[:2], coefficients[2:]):
            X = gram_quintics(X, part) if part else X
        return X
    for a, b, c in coefficients:  # baddbmm folds each scaled sum into its matmul (20-25 % less time than five
        A = X @ X.mT              # separate element-wise passes, fp32 on a CPU)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    return X


def newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately the nearest semi-orthogonal matrix to each matrix of G (..., rows, cols) (quintic
    iteration, as upstream).

    In bf16 where bf16 matmuls are fast (GPUs; CPUs with AMX or AVX512_BF16: compute.BF16_PATHS), as
    upstream; else fp32.
    """
    X = G.bfloat16() if G.is_cuda or bf16_on_cpu("newton_schulz") else G.float()
    X = X.reshape(-1, *G.shape[-2:])  # (matrices, rows, cols): baddbmm takes a batch
    tall = G.size(-2) > G.size(-1)
    X = X.mT if tall else X
    X = quintic_iteration(X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7), [NEWTON_SCHULZ] * steps)
    return (X.mT if tall else X).reshape(G.shape).to(G.dtype)


def polar_express(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The 2026 orthogonalization of each matrix of G (matrices, rows, cols): MuonEq row equilibration, then
    Polar Express (quintics with a coefficient triple per step, fewer steps to the polar factor).

    In bf16 on a GPU (upstream's compute dtype there), else in G's dtype (fp32 on a CPU, as upstream)."""
    X = G.bfloat16() if G.is_cuda else G
    # MuonEq: each row rescaled to the mean row norm, a better conditioned spectrum for the iteration; and the
    # matrix to Frobenius norm 1 / 1.01 (spectral norm < 1), both from the row norms: one pass over X, not five
    row_norms = X.float().norm(dim=-1, keepdim=True)
    target = row_norms.square().sum(dim=(-2, -1), keepdim=True).sqrt() / X.size(-2) ** 0.5
    scales = target / row_norms.clamp_min(1e-6)
    equilibrated = (row_norms * scales).square().sum(dim=(-2, -1), keepdim=True).sqrt()
    X = X * (scales / (equilibrated * 1.01 + 1e-6)).to(X.dtype)
    tall = G.size(-2) > G.size(-1)  # a tall X's X^T X iteration is the wide iteration of X^T, transposed
    # through the Gram matrix in fp32 only (its accuracy is measured there; a GPU's bf16 iteration stays direct)
    X = quintic_iteration(X.mT if tall else X, POLAR_EXPRESS[:steps], gram=X.dtype == torch.float32)
    return (X.mT if tall else X).to(G.dtype)


def normuon_update(g: torch.Tensor, second_moments: list[torch.Tensor], beta2: float, lr: float) -> torch.Tensor:
    """lr x the 2026 update of the orthogonalized g (matrices, rows, cols); `second_moments`, one (rows, 1) or
    (1, cols) per matrix, move towards this step's mean squares (in place). Everything from the norms of g's
    rows (columns, if wide): one pass over g to read them, one to scale it."""
    red_dim = -1 if g.size(-2) >= g.size(-1) else -2
    norms = g.float().norm(dim=red_dim, keepdim=True)
    # Muon+: each matrix's Frobenius norm snapped to sqrt(min(rows, cols)), an exactly semi-orthogonal one's
    plus = min(g.shape[-2:]) ** 0.5 / norms.square().sum(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-6)
    # NorMuon: each row (column, if wide) divided by its RMS's running average, the matrix kept at its norm
    v_mean = (norms * plus).square() / g.size(red_dim)
    torch._foreach_lerp_(second_moments, list(v_mean.to(g.dtype).unbind(0)), 1 - beta2)
    step_size = torch.stack(second_moments).clamp_min(1e-10).rsqrt()
    v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * g.size(red_dim)).sqrt()
    v_norm_new = (v_mean * g.size(red_dim) * step_size.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    return g * (lr * plus * step_size * (v_norm / v_norm_new.clamp_min(1e-10))).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:  # a sharded process may own no matrix of a group's shape
                continue
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                if "beta2" in group and "second_momentum_buffer" not in self.state[p]:  # NorMuon's, factored
                    rows, cols = p.shape[-2:]
                    self.state[p]["second_momentum_buffer"] = p.new_zeros((rows, 1) if rows >= cols else (1, cols))
            grads, bufs = [p.grad for p in params], [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])  # one kernel per list, not per tensor
            updates = torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs
            # Matrices of one shape are orthogonalized together, one batched iteration per shape (a block
            # has 3 or 4 shapes for its 6 matrices): small models spend their optimizer time in per-call overhead.
            by_shape: dict[torch.Size, list[int]] = {}
            for i, p in enumerate(params):
                by_shape.setdefault(p.shape, []).append(i)
            for shape, indices in by_shape.items():
                stacked, shaped = torch.stack([updates[i] for i in indices]), [params[i] for i in indices]
                # Scale so tall and wide matrices get updates of comparable RMS (both recipes, as upstream).
                lr = group["lr"] * max(1.0, shape[-2] / shape[-1]) ** 0.5
                if "beta2" not in group:
                    orthogonal = newton_schulz(stacked, group["ns_steps"])
                    torch._foreach_add_(shaped, list(orthogonal.unbind(0)), alpha=-lr)
                    continue
                step = normuon_update(polar_express(stacked, group["ns_steps"]),
                                      [self.state[p]["second_momentum_buffer"] for p in shaped], group["beta2"], lr)
                # Cautious weight decay: only where the update and the weight agree in sign
                P = torch.stack(shaped)
                decayed = torch.addcmul(step, P, step * P >= 0, value=lr * group["weight_decay"])
                torch._foreach_sub_(shaped, list(decayed.unbind(0)))
