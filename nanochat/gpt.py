"""The nanochat GPT.

- rotary embeddings (no learned positions), QK-norm, parameter-free RMSNorm
- ReLU^2 MLP (4x), no biases, untied embedding and head
- grouped-query attention (n_kv_head <= n_head), logits soft-capped at 15 in fp32
- attention that works with a KV cache (prefill, single-token decode, chunked prefill, rows decoding at
  their own positions after a right-padded prefill)
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanochat import fused
from nanochat.config_checks import model_shape
from nanochat.muon import Muon

SOFTCAP = 15.0  # logits are squashed into (-15, 15) by 15 tanh(x / 15)


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 65536  # padded up to a multiple of 64 inside the model
    n_layer: int = 20
    n_head: int = 10
    n_kv_head: int = 10
    n_embd: int = 1280

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, sequence_len: int, model_dim: int = 0,
                   n_kv_head: int = 0) -> "GPTConfig":
        """Upstream's sizing (nanochat.config_checks): width = depth x 64, head dim 128 where it divides (else 64)."""
        dim, n_head, n_kv = model_shape(depth, model_dim, n_kv_head)
        return cls(sequence_len, vocab_size, depth, n_head, n_kv, dim)


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


class KVCache:
    """Keys and values of every layer for a batch of sequences, filled as tokens are processed.

    Rows of different lengths (a batch of right-padded prompts) decode together once `set_lengths` gives
    each row its length: each row's next token is then written at, and sees the keys up to, its own
    position; the padding after a row's prompt is masked until the row's own tokens overwrite it."""

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.kv = torch.zeros(num_layers, 2, batch_size, num_heads, seq_len, head_dim, device=device, dtype=dtype)
        self.pos = 0  # tokens already cached (advanced after the last layer); with row lengths: the longest row
        self.lengths: torch.Tensor | None = None  # per-row tokens cached (B,), set after a padded prefill
        self.mask: tuple[int, torch.Tensor] | None = None  # key_mask for position `pos`: every layer's, built once

    def set_lengths(self, lengths: list[int]) -> None:
        """From now on one token per row, each at its own position `lengths[row]`."""
        self.lengths = torch.tensor(lengths, device=self.kv.device)
        self.pos = max(lengths)

    def key_mask(self) -> torch.Tensor | None:
        """(B, 1, 1, keys) True where a row's query may attend: its own tokens so far (None: all rows alike)."""
        if self.lengths is None:
            return None
        if self.mask is None or self.mask[0] != self.pos:  # the rows advance after the last layer only
            keys = torch.arange(self.pos + 1, device=self.kv.device)
            self.mask = self.pos, (keys[None, :] <= self.lengths[:, None])[:, None, None, :]
        return self.mask[1]

    def insert(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last_layer = layer == self.kv.size(0) - 1
        if self.lengths is not None:  # one new token per row, at the row's own position
            if k.size(2) != 1 or self.pos + 1 > self.kv.size(4):
                raise ValueError(f"rows at their own positions take one token at a time, up to {self.kv.size(4)}")
            rows = torch.arange(k.size(0), device=k.device)  # index_put casts nothing: under autocast v is bf16
            self.kv[layer, 0, rows, :, self.lengths] = k[:, :, 0].to(self.kv.dtype)
            self.kv[layer, 1, rows, :, self.lengths] = v[:, :, 0].to(self.kv.dtype)
            keys = self.pos + 1
            if last_layer:
                self.lengths += 1
                self.pos += 1
            return self.kv[layer, 0, :, :, :keys], self.kv[layer, 1, :, :, :keys]
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.kv.size(4):
            raise ValueError(f"KV cache holds {self.kv.size(4)} tokens, {t1} requested")
        self.kv[layer, 0, :, :, t0:t1] = k
        self.kv[layer, 1, :, :, t0:t1] = v
        if last_layer:
            self.pos = t1
        return self.kv[layer, 0, :, :, :t1], self.kv[layer, 1, :, :, :t1]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))  # QK-norm
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        mask = kv_cache.key_mask() if kv_cache is not None else None  # before insert advances the rows
        if kv_cache is not None:
            k, v = kv_cache.insert(self.layer_idx, k, v)
        Tq, Tk = q.size(2), k.size(2)
        gqa = self.n_head != self.n_kv_head
        if mask is not None:  # rows at their own positions: each sees its own tokens only
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        elif Tq == Tk:  # training, or a prefill into an empty cache
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif Tq == 1:  # decoding one token: it sees everything before it
            y = F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)
        else:  # a chunk after a cached prefix: the whole prefix, causal within the chunk
            mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(relu_squared(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(norm(x), cos_sin, kv_cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.padded_vocab = math.ceil(config.vocab_size / 64) * 64  # friendlier matmul shapes
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(self.padded_vocab, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, self.padded_vocab, bias=False)
        self.rotary_len = config.sequence_len * 10  # room for generation past the training length
        cos, sin = self._rotary(self.rotary_len, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _rotary(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        cos, sin = freqs.cos(), freqs.sin()
        return torch.cat([cos, cos], -1)[None, :, None, :], torch.cat([sin, -sin], -1)[None, :, None, :]  # (1, T, 1, D)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Embedding N(0,1), head N(0,0.001), q/k/v/fc uniform +-sqrt(3/d), output projections zero."""
        nn.init.normal_(self.transformer.wte.weight, 0.0, 1.0)
        nn.init.normal_(self.lm_head.weight, 0.0, 0.001)
        bound = math.sqrt(3.0 / self.config.n_embd)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 x non-embedding params + attention's 12 * l * h * q * t."""
        c = self.config
        nparams = self.num_params() - self.transformer.wte.weight.numel()
        return 6 * nparams + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.sequence_len

    def setup_optimizers(self, embedding_lr: float, unembedding_lr: float, matrix_lr: float,
                         weight_decay: float, owns: Callable[[nn.Parameter], bool] | None = None
                         ) -> list[torch.optim.Optimizer]:
        """AdamW for embedding and head (LRs scaled by (d/768)^-0.5), Muon for every block matrix; over the
        parameters `owns` selects (a process's share when the optimizer is sharded: nanochat.sharding)."""
        scale = (self.config.n_embd / 768) ** -0.5
        owns = owns or (lambda p: True)
        adam_groups = [{"params": [p for p in [self.transformer.wte.weight] if owns(p)], "lr": embedding_lr * scale},
                       {"params": [p for p in [self.lm_head.weight] if owns(p)], "lr": unembedding_lr * scale}]
        # fused: one kernel over all its parameters (2.7 against 6.5 ms per step at d4 on a 2-core CPU)
        adamw = torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=weight_decay, fused=True)
        muon = Muon([{"params": [p for p in self.transformer.h.parameters() if owns(p)]}], lr=matrix_lr, momentum=0.95)
        for opt in (adamw, muon):
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
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
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache)
        return norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of hidden states (..., n_embd), the vocabulary's padding cut off, soft-capped at 15."""
        return softcap(self.lm_head(hidden)[..., :self.config.vocab_size])

    def export_config(self) -> dict:
        return asdict(self.config)
