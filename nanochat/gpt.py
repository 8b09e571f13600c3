"""The nanochat GPT, in two recipes (GPTConfig.recipe).

"course" (upstream 48abd7d, what the course trains):
- rotary embeddings (no learned positions), QK-norm, parameter-free RMSNorm
- ReLU^2 MLP (4x), no biases, untied embedding and head
- grouped-query attention (n_kv_head <= n_head), logits soft-capped at 15 in fp32
- attention that works with a KV cache (prefill, single-token decode, chunked prefill, rows decoding at
  their own positions after a right-padded prefill): the kernels and the cache are in attention.py

"2026" (upstream 92d63d4's GPT, parameter names as upstream's) adds, each marked "2026" where it happens:
- value embeddings mixed into the values of alternating layers through a per-head gate
- smear (the previous token's embedding mixed into each token) and backout (the mid-layer residual subtracted)
- learnable per-layer resid_lambdas / x0_lambdas (residual scale, blend of the first embedding)
- sliding-window attention (GPTConfig.window_pattern), q and k scaled by 1.2, RoPE base 100,000
- its init (embedding std 0.8, c_fc x0.4, ...), and fp32 master weights with the embeddings stored in the
  compute dtype (GPT.cast_embeddings): matmuls run in the activations' dtype, no autocast
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanochat import fused
from nanochat.attention import KVCache, causal_attention
from nanochat.config_checks import model_shape
from nanochat.muon import Muon

SOFTCAP = 15.0  # logits are squashed into (-15, 15) by 15 tanh(x / 15)
RECIPES = ("course", "2026")


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 65536  # padded up to a multiple of 64 inside the model
    n_layer: int = 20
    n_head: int = 10
    n_kv_head: int = 10
    n_embd: int = 1280
    recipe: str = "course"  # "course" (upstream 48abd7d) or "2026" (upstream 92d63d4); old checkpoints: course
    window_pattern: str = "L"  # 2026: S (short window) / L (long) tiled over the layers, the last layer L

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, sequence_len: int, model_dim: int = 0, n_kv_head: int = 0,
                   recipe: str = "course", window_pattern: str = "L") -> "GPTConfig":
        """Upstream's sizing (nanochat.config_checks): width = depth x 64 (2026: rounded up to a multiple of 128),
        head dim 128 where it divides (else 64)."""
        dim, n_head, n_kv = model_shape(depth, model_dim, n_kv_head, recipe)
        return cls(sequence_len, vocab_size, depth, n_head, n_kv, dim, recipe, window_pattern)


def window_sizes(config: GPTConfig) -> list[int | None]:
    """Per layer, how many keys before its own each query sees: None (all of them) in the course recipe; in
    2026, window_pattern tiled over the layers, L = sequence_len and S = a quarter of it rounded up to 128, the
    last layer L. The long window applies too when generation runs past sequence_len (as upstream)."""
    if config.recipe not in RECIPES:
        raise ValueError(f"recipe {config.recipe!r}: one of {', '.join(RECIPES)}")
    pattern = config.window_pattern.upper()
    if not pattern or pattern.strip("SL") or (config.recipe == "course" and "S" in pattern):
        raise ValueError(f"window_pattern {config.window_pattern!r}: letters S and L (S in the 2026 recipe only)")
    if config.recipe == "course":
        return [None] * config.n_layer
    long = config.sequence_len
    short = -(-long // 4 // 128) * 128
    sizes = [short if pattern[i % len(pattern)] == "S" else long for i in range(config.n_layer)]
    return sizes[:-1] + [long]


def has_ve(layer_idx: int, n_layer: int) -> bool:
    """2026: whether a layer has a value embedding (alternating layers, the last one included)."""
    return layer_idx % 2 == (n_layer - 1) % 2


class Linear(nn.Linear):
    """nn.Linear whose weight is cast to the input's dtype: fp32 master weights, matmuls in the activations'
    dtype (2026: bf16 from bf16 embeddings). Under autocast (the course recipe) it changes nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        return F.linear(x, weight if weight.dtype == x.dtype else weight.to(x.dtype))  # no call when they agree


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without learnable parameters: x / sqrt(mean(x^2) + eps) over the last dim."""
    if fused.applies(x):  # eager CPU training (nanochat.fused: the same numbers, a cheaper backward)
        return fused.RMSNorm.apply(x)
    return F.rms_norm(x, (x.size(-1),))


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    if fused.applies(x):
        return fused.ReluSquared.apply(x)
    return F.relu(x).square()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x1[i], x2[i]) of the two halves of the head dim: [x1 cos + x2 sin, -x1 sin + x2 cos].
    `cos` is [cos, cos] and `sin` [sin, -sin] over the whole head dim (GPT._rotary), and rolling x by half
    gives [x2, x1]: three element-wise ops instead of eight, the same numbers bit for bit."""
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin


def softcap(logits: torch.Tensor) -> torch.Tensor:
    """fp32 logits squashed smoothly into (-SOFTCAP, SOFTCAP)."""
    return SOFTCAP * torch.tanh(logits.float() / SOFTCAP)


def softcapped_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row loss of logits (rows, vocab) soft-capped at SOFTCAP; 0 where the target is -1."""
    if logits.is_cpu and not torch.compiler.is_compiling():  # also at inference: the loss has no backward to skip
        return fused.SoftcappedCrossEntropy.apply(logits, targets, SOFTCAP)
    return F.cross_entropy(softcap(logits), targets, ignore_index=-1, reduction="none")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int, window: int | None):
        super().__init__()
        self.layer_idx, self.window, self.recipe = layer_idx, window, config.recipe
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=False)
        # 2026: the gate of the value embedding, per kv head from the first 12 channels of the input
        with_ve = config.recipe == "2026" and has_ve(layer_idx, config.n_layer)
        self.ve_gate = Linear(12, self.n_kv_head, bias=False) if with_ve else None

    def rotate_and_norm(self, t: torch.Tensor, cos_sin: tuple) -> torch.Tensor:
        """Queries or keys (B, T, heads, D) rotated to their positions, then QK-normed (2026: scaled by 1.2)."""
        t = norm(apply_rotary(t, *cos_sin))
        return t * 1.2 if self.recipe == "2026" else t  # 2026: sharper attention, the scale split between q and k

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple,
                kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:  # 2026: the value embedding mixed into the values, gated per head in (0, 3)
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :12]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        if kv_cache is not None:  # inference: q and k rotated and normalized together, half the small ops per token
            qk = self.rotate_and_norm(torch.cat([q, k], dim=2), cos_sin)
            q, k = qk[:, :, :self.n_head], qk[:, :, self.n_head:]
        else:
            q, k = self.rotate_and_norm(q, cos_sin), self.rotate_and_norm(k, cos_sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        mask = kv_cache.key_mask(self.window) if kv_cache is not None else None  # before insert advances the rows
        if kv_cache is not None:
            k, v = kv_cache.insert(self.layer_idx, k, v)
        y = causal_attention(q, k, v, self.window, mask)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(relu_squared(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int, window: int | None):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx, window)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple,
                kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(norm(x), ve, cos_sin, kv_cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.window_sizes = window_sizes(config)
        self.padded_vocab = math.ceil(config.vocab_size / 64) * 64  # friendlier matmul shapes
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(self.padded_vocab, config.n_embd),
            "h": nn.ModuleList([Block(config, i, w) for i, w in enumerate(self.window_sizes)]),
        })
        self.lm_head = Linear(config.n_embd, self.padded_vocab, bias=False)
        twenty26 = config.recipe == "2026"
        if twenty26:
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))  # per-layer scale of the residual stream
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))  # per-layer share of the first embedding
            self.smear_gate = Linear(24, 1, bias=False)  # smear's gate, from a token's first 24 channels
            self.smear_lambda = nn.Parameter(torch.zeros(1))  # smear's strength
            self.backout_lambda = nn.Parameter(0.2 * torch.ones(1))  # how much mid-layer residual is subtracted
        kv_dim = config.n_kv_head * (config.n_embd // config.n_head)
        # 2026: value embeddings of alternating layers (course: none)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(self.padded_vocab, kv_dim)
                                           for i in range(config.n_layer) if twenty26 and has_ve(i, config.n_layer)})
        self.rotary_len = config.sequence_len * 10  # room for generation past the training length
        self.rotary_base = 100_000.0 if twenty26 else 10_000.0
        cos, sin = self._rotary(self.rotary_len, config.n_embd // config.n_head, self.rotary_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _rotary(seq_len: int, head_dim: int, base: float = 10000.0, device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        cos, sin = freqs.cos(), freqs.sin()
        return torch.cat([cos, cos], -1)[None, :, None, :], torch.cat([sin, -sin], -1)[None, :, None, :]  # (1, T, 1, D)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Embedding N(0,1), head N(0,0.001), q/k/v/fc uniform +-sqrt(3/d), output projections zero. 2026 (in
        upstream's order, so one seed gives upstream's weights): embedding std 0.8 and c_fc x0.4, then its
        scalars, the value embeddings as c_v, the gates of smear and value embeddings uniform in (0, 0.02)."""
        twenty26 = self.config.recipe == "2026"
        nn.init.normal_(self.transformer.wte.weight, 0.0, 0.8 if twenty26 else 1.0)
        nn.init.normal_(self.lm_head.weight, 0.0, 0.001)
        bound = math.sqrt(3.0 / self.config.n_embd)
        fc_bound = bound * 0.4 if twenty26 else bound
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.uniform_(block.mlp.c_fc.weight, -fc_bound, fc_bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        if not twenty26:
            return
        # the rotary tables again, on the model's device: a model built on the meta device (as upstream) has none
        self.cos, self.sin = self._rotary(self.rotary_len, self.config.n_embd // self.config.n_head,
                                          self.rotary_base, self.lm_head.weight.device)
        n = self.config.n_layer
        for i in range(n):  # early layers: a stronger residual and more of the first embedding
            self.resid_lambdas[i] = 1.15 - 0.10 * i / max(n - 1, 1)
            self.x0_lambdas[i] = 0.20 - 0.15 * i / max(n - 1, 1)
        nn.init.zeros_(self.smear_lambda)
        nn.init.constant_(self.backout_lambda, 0.2)
        nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -bound, bound)
        for block in self.transformer.h:
            if block.attn.ve_gate is not None:
                nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)

    def cast_embeddings(self, dtype: torch.dtype) -> None:
        """2026: the dtype the model computes in (bf16 on CUDA; on a CPU it stays fp32, as upstream): the token and
        value embeddings and the rotary tables are stored in it, and everything downstream follows them (the
        Linear layers cast their fp32 master weights). Trainers call it after init_weights."""
        if self.config.recipe != "2026":
            raise ValueError("the course recipe keeps fp32 embeddings and computes under autocast")
        self.transformer.wte.to(dtype)
        self.value_embeds.to(dtype)
        self.cos, self.sin = self.cos.to(dtype), self.sin.to(dtype)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_scaling_params(self) -> dict[str, int]:
        """Parameter counts by group, upstream's dict (scaling laws use a sum of some of them)."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())
        counts = {"wte": count(self.transformer.wte), "value_embeds": count(self.value_embeds),
                  "lm_head": count(self.lm_head), "transformer_matrices": count(self.transformer.h)}
        total = self.num_params()
        return {**counts, "scalars": total - sum(counts.values()), "total": total}

    def flops_per_token(self) -> int:
        """Training FLOPs per token (upstream's estimate): 6 per weight of every matmul (2 forward, 4 backward;
        embeddings are lookups) plus, per layer, attention's 12 * heads * head dim * the keys a query sees
        (sequence_len, or the layer's window if shorter)."""
        c = self.config
        matmul_params = sum(m.weight.numel() for m in self.modules() if isinstance(m, Linear))
        seen = [c.sequence_len if w is None else min(w, c.sequence_len) for w in self.window_sizes]
        return 6 * matmul_params + sum(12 * c.n_head * (c.n_embd // c.n_head) * t for t in seen)

    def setup_optimizers(self, embedding_lr: float, unembedding_lr: float, matrix_lr: float,
                         weight_decay: float, owns: Callable[[nn.Parameter], bool] | None = None,
                         scalar_lr: float = 0.5) -> list[torch.optim.Optimizer]:
        """[AdamW, Muon] over the parameters `owns` selects (a process's share when the optimizer is sharded:
        nanochat.sharding). Course: AdamW for embedding and head (LRs scaled by (d/768)^-0.5), Muon for every
        block matrix. 2026 (upstream's groups): AdamW groups with their own betas and weight decay for head,
        embedding, value embeddings (half the embedding LR), resid_lambdas, x0_lambdas and the smear/backout
        scalars; one Muon group per matrix shape with upstream's Muon settings and `weight_decay`."""
        scale = (self.config.n_embd / 768) ** -0.5
        owns = owns or (lambda p: True)

        def group(params, **settings) -> dict:
            return {"params": [p for p in params if owns(p)], **settings}

        if self.config.recipe == "course":
            adam_groups = [group([self.transformer.wte.weight], lr=embedding_lr * scale),
                           group([self.lm_head.weight], lr=unembedding_lr * scale)]
            # fused: one kernel over all its parameters (2.7 against 6.5 ms per step at d4 on a 2-core CPU)
            adamw = torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=weight_decay, fused=True)
            muon = Muon([group(self.transformer.h.parameters())], lr=matrix_lr, momentum=0.95)
        else:
            adam_groups = [
                group([self.lm_head.weight], lr=unembedding_lr * scale, betas=(0.8, 0.96), weight_decay=0.01),
                group([self.transformer.wte.weight], lr=embedding_lr * scale, betas=(0.8, 0.995), weight_decay=0.001),
                group(self.value_embeds.parameters(), lr=embedding_lr * scale * 0.5, betas=(0.8, 0.995),
                      weight_decay=0.01),
                group([self.resid_lambdas], lr=scalar_lr * 0.01, betas=(0.8, 0.95), weight_decay=0.05),
                group([self.x0_lambdas], lr=scalar_lr, betas=(0.96, 0.95), weight_decay=0.0),
                group([self.smear_gate.weight, self.smear_lambda, self.backout_lambda], lr=0.2, betas=(0.8, 0.95),
                      weight_decay=0.0),
            ]
            adamw = torch.optim.AdamW(adam_groups, eps=1e-10, fused=True)
            matrices = list(self.transformer.h.parameters())
            muon = Muon([group([p for p in matrices if p.shape == shape], lr=matrix_lr, momentum=0.95, ns_steps=5,
                               beta2=0.9, weight_decay=weight_decay)
                         for shape in sorted({p.shape for p in matrices})], lr=matrix_lr)
        for opt in (adamw, muon):
            for g in opt.param_groups:
                g["initial_lr"] = g["lr"]
        return [adamw, muon]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, loss_reduction: str = "mean") -> torch.Tensor:
        """Loss if `targets` (positions with target -1 are ignored; loss_reduction "mean", "sum" or "none":
        per position, flattened), else fp32 logits (B, T, vocab)."""
        hidden = self.hidden(idx, kv_cache)
        if targets is None:
            return self.logits(hidden)
        raw = self.lm_head(hidden)[..., :self.config.vocab_size]
        losses = softcapped_cross_entropy(raw.reshape(-1, raw.size(-1)), targets.reshape(-1))
        if loss_reduction == "none":
            return losses
        if loss_reduction == "sum":
            return losses.sum()
        if loss_reduction == "mean":
            return losses.sum() / (targets >= 0).sum()
        raise ValueError(f"loss_reduction must be mean, sum or none, not {loss_reduction!r}")

    def smear(self, x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """2026: each token's normalized embedding plus its predecessor's, gated by its own first 24 channels
        (cheap bigram information); `previous` (B, 1, C): the embedding before x[:, 0], None where x[:, 0]
        starts the sequence (it has no predecessor and stays as it is)."""
        if previous is None:
            return torch.cat([x[:, :1], self.smear(x[:, 1:], x[:, :1])], dim=1)
        gate = self.smear_lambda.to(x.dtype) * torch.sigmoid(self.smear_gate(x[..., :24]))
        return x + gate * torch.cat([previous, x[:, :-1]], dim=1)

    def hidden(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """The normalized last hidden states (B, T, n_embd) that the head reads. Evaluations that need the
        logits of a few positions only take those rows to `logits`: the head is a vocab-sized matmul."""
        B, T = idx.size()
        t0 = kv_cache.pos if kv_cache is not None else 0
        if t0 + T > self.rotary_len:
            raise ValueError(f"sequence of {t0 + T} tokens exceeds the rotary cache ({self.rotary_len})")
        if kv_cache is not None and kv_cache.lengths is not None:  # each row's token at its own position
            positions = kv_cache.lengths.view(B, 1)
            cos_sin = self.cos[0, positions], self.sin[0, positions]  # (B, 1, 1, D)
        else:
            cos_sin = self.cos[:, t0:t0 + T], self.sin[:, t0:t0 + T]
        x = norm(self.transformer.wte(idx))
        twenty26 = self.config.recipe == "2026"
        if twenty26:
            x = self.smear(x, kv_cache.previous_embedding(x) if kv_cache is not None else None)
        x0, backout = x, None
        for i, block in enumerate(self.transformer.h):
            if twenty26:  # the residual stream rescaled, and the first embedding blended back in
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx).to(x.dtype) if twenty26 and str(i) in self.value_embeds else None
            x = block(x, ve, cos_sin, kv_cache)
            if twenty26 and i == self.config.n_layer // 2:
                backout = x
        if backout is not None:  # 2026: part of the mid-layer residual (low-level features) taken out
            x = x - self.backout_lambda.to(x.dtype) * backout
        return norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of hidden states (..., n_embd), the vocabulary's padding cut off, soft-capped at 15."""
        return softcap(self.lm_head(hidden)[..., :self.config.vocab_size])

    def export_config(self) -> dict:
        return asdict(self.config)
