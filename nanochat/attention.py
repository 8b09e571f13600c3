"""Causal attention for gpt.py, and the KV cache that decoding fills.

`causal_attention` picks, per call, the cheapest exact way to run upstream's rule (query i sees keys j with
i - window <= j <= i): SDPA's causal kernel for whole sequences, a band of chunks for a sliding window on a
CPU, flex_attention for one on a GPU, an explicit mask after a cached prefix. `KVCache` keeps every layer's
keys and values (and a 2026 model's token embeddings, for smear) while a prompt is prefilled and decoded.
"""

import functools
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from nanochat import fused

FLEX_DEVICES = ("cuda",)  # where a window over a whole sequence (training, a prefill) goes through flex_attention


def sliding_window_mask(T: int, window: int, device: torch.device) -> BlockMask:
    """flex_attention's block mask of T queries over T keys: query i sees keys i - window .. i."""
    def in_window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx <= window)
    return create_block_mask(in_window, None, None, T, T, device=device)


@functools.cache
def compiled_flex() -> tuple[Callable, Callable]:
    """flex_attention compiled, as torch's docs advise (eagerly it computes every score), and a cache of block
    masks per (T, window, device); made on first use, since torch.compile takes seconds to import."""
    return torch.compile(flex_attention), functools.lru_cache(maxsize=64)(sliding_window_mask)


def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention within a window of (B, H, T, D) queries over as many keys, through flex_attention."""
    gqa = q.size(1) != k.size(1)
    if torch.compiler.is_compiling():  # inside a compiled model: the mask and the kernel join the model's graph
        return flex_attention(q, k, v, block_mask=sliding_window_mask(q.size(2), window, q.device), enable_gqa=gqa)
    flex, block_mask = compiled_flex()
    return flex(q, k, v, block_mask=block_mask(q.size(2), window, q.device), enable_gqa=gqa)


@functools.lru_cache(maxsize=16)
def band_mask(batch: int, chunks: int, window: int, device: torch.device) -> torch.Tensor:
    """banded_attention's mask (batch x chunks, 1, window, 2 window): query t of a chunk sees key u of the chunk
    before it and its own when t <= u <= t + window; the first chunk has none before it."""
    t, u = torch.arange(window, device=device)[:, None], torch.arange(2 * window, device=device)[None, :]
    seen = (u >= t) & (u <= t + window)
    mask = seen.repeat(chunks, 1, 1)
    mask[0, :, :window] = False
    return mask.expand(batch, -1, -1, -1).reshape(batch * chunks, 1, window, 2 * window)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention within a window of (B, H, T, D) queries over as many keys, T a multiple of the window:
    the queries in chunks of `window`, each chunk over the keys of the chunk before and its own, one batch of
    chunks through SDPA. With a (T, T) mask SDPA computes every score (4x as many at a quarter window): 13.7
    against 18.2 ms forward and backward at d4 (B 4, H 2, T 512, D 128) on a 2-core CPU."""
    B, H, T, D = q.shape
    n = T // window
    q = q.transpose(1, 2).reshape(B * n, window, H, D).transpose(1, 2)
    k, v = (fused.KeyWindows.apply(t.transpose(1, 2), n).transpose(1, 2) for t in (k, v))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(B, n, window, q.device), enable_gqa=H != k.size(1))
    return y.transpose(1, 2).reshape(B, T, H, D).transpose(1, 2)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None,
                     key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of queries (B, H, Tq, D), the last Tq of Tk positions, over keys and values (B, H_kv, Tk, D):
    query i sees keys j with i - window <= j <= i (window None: every j <= i), upstream's rule. `key_mask`
    (B, 1, 1, Tk), rows decoding at their own positions: the keys each row's query sees (KVCache.key_mask)."""
    Tq, Tk = q.size(2), k.size(2)
    gqa = q.size(1) != k.size(1)
    windowed = window is not None and window < Tk
    if key_mask is not None:  # rows at their own positions: each sees its own tokens only
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, enable_gqa=gqa)
    if Tq == Tk and not windowed:  # training, or a prefill into an empty cache
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if Tq == 1:  # decoding one token: it sees everything before it, or its window
        if windowed:
            k, v = k[:, :, -(window + 1):], v[:, :, -(window + 1):]
        return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)
    if Tq == Tk and q.device.type in FLEX_DEVICES:  # a window over a whole sequence on a GPU
        return flex_window_attention(q, k, v, window)
    if Tq == Tk and window > 0 and Tk % window == 0:  # a window over a whole sequence elsewhere: in chunks
        return banded_attention(q, k, v, window)
    # a chunk after a cached prefix (the whole prefix, causal within the chunk), or a window: an explicit mask
    i = torch.arange(Tk - Tq, Tk, device=q.device)[:, None]
    j = torch.arange(Tk, device=q.device)[None, :]
    mask = (j <= i) & (i - j <= window) if windowed else j <= i
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class KVCache:
    """Keys and values of every layer for a batch of sequences, filled as tokens are processed; for a 2026
    model also each position's normalized token embedding, which smear mixes into the next token.

    Rows of different lengths (a batch of right-padded prompts) decode together once `set_lengths` gives
    each row its length: each row's next token is then written at, and sees the keys up to, its own
    position; the padding after a row's prompt is masked until the row's own tokens overwrite it.
    Keys and values are kept in the dtype the model computes them in (bf16 for a 2026 model whose embeddings
    are bf16, whatever `dtype` says); under autocast the course model's keys are fp32."""

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.store(torch.zeros(num_layers, 2, batch_size, num_heads, seq_len, head_dim, device=device, dtype=dtype))
        self.embeddings: torch.Tensor | None = None  # 2026: (B, seq_len, n_embd), made by the first forward
        self.pos = 0  # tokens already cached (advanced after the last layer); with row lengths: the longest row
        self.lengths: torch.Tensor | None = None  # per-row tokens cached (B,), set after a padded prefill
        self.masks: tuple[int, dict] | None = None  # key_masks per window for position `pos`, built once

    @classmethod
    def for_model(cls, model: nn.Module, batch_size: int, seq_len: int) -> "KVCache":
        """An empty cache shaped for `model`, on its device, in its weights' dtype (a 2026 model's, in bf16 on
        CUDA: the cache takes the keys' dtype when filled)."""
        c, weight = model.config, model.lm_head.weight
        return cls(batch_size, c.n_kv_head, seq_len, c.n_embd // c.n_head, c.n_layer, weight.device, weight.dtype)

    def store(self, kv: torch.Tensor) -> None:
        """Keep `kv` (layers, 2, B, H, seq_len, D) and each layer's keys and values as views of it, made once:
        indexing kv[layer, 0, :, :, t0:t1] anew for every write and read costs more than the copy itself."""
        self.kv = kv
        self.layers = [(kv[i, 0], kv[i, 1]) for i in range(kv.size(0))]

    def set_lengths(self, lengths: list[int]) -> None:
        """From now on one token per row, each at its own position `lengths[row]`."""
        self.lengths = torch.tensor(lengths, device=self.kv.device)
        self.pos = max(lengths)

    def repeat(self, n: int) -> None:
        """A cache of one row becomes n rows that continue it alike (samples of one prompt)."""
        self.store(self.kv.repeat(1, 1, n, 1, 1, 1))
        if self.embeddings is not None:
            self.embeddings = self.embeddings.repeat(n, 1, 1)

    def key_mask(self, window: int | None) -> torch.Tensor | None:
        """(B, 1, 1, keys) True where a row's query may attend: its own tokens so far, at most `window` before
        its own (None: all rows alike, no mask)."""
        if self.lengths is None:
            return None
        if self.masks is None or self.masks[0] != self.pos:  # the rows advance after the last layer only
            self.masks = self.pos, {}
        masks = self.masks[1]
        if window not in masks:
            keys = torch.arange(self.pos + 1, device=self.kv.device)[None, :]
            mask = keys <= self.lengths[:, None]
            if window is not None:
                mask &= keys >= self.lengths[:, None] - window
            masks[window] = mask[:, None, None, :]
        return masks[window]

    def previous_embedding(self, x: torch.Tensor) -> torch.Tensor | None:
        """2026: store the new tokens' normalized embeddings x (B, T, n_embd); return each row's embedding of the
        token before x[:, 0] (B, 1, n_embd), None when x starts the sequences."""
        if self.embeddings is None:
            self.embeddings = x.new_zeros(x.size(0), self.kv.size(4), x.size(2))
        if self.lengths is not None:  # one token per row, at the row's own position
            rows = torch.arange(x.size(0), device=x.device)
            previous = self.embeddings[rows, self.lengths - 1][:, None]
            self.embeddings[rows, self.lengths] = x[:, 0]
            return previous
        previous = self.embeddings[:, self.pos - 1:self.pos] if self.pos > 0 else None
        self.embeddings[:, self.pos:self.pos + x.size(1)] = x
        return previous

    def insert(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last_layer = layer == self.kv.size(0) - 1
        if self.lengths is not None:  # one new token per row, at the row's own position
            if k.size(2) != 1 or self.pos + 1 > self.kv.size(4):
                raise ValueError(f"rows at their own positions take one token at a time, up to {self.kv.size(4)}")
            keys, values = self.layers[layer]
            rows = torch.arange(k.size(0), device=k.device)  # index_put casts nothing: under autocast v is bf16
            keys[rows, :, self.lengths] = k[:, :, 0].to(self.kv.dtype)
            values[rows, :, self.lengths] = v[:, :, 0].to(self.kv.dtype)
            seen = self.pos + 1
            if last_layer:
                self.lengths += 1
                self.pos += 1
            return keys.narrow(2, 0, seen), values.narrow(2, 0, seen)
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.kv.size(4):
            raise ValueError(f"KV cache holds {self.kv.size(4)} tokens, {t1} requested")
        if t0 == 0 and k.dtype != self.kv.dtype:  # an empty cache takes the model's dtype
            self.store(self.kv.to(k.dtype))
        keys, values = self.layers[layer]
        keys.narrow(2, t0, k.size(2)).copy_(k)
        values.narrow(2, t0, k.size(2)).copy_(v)
        if last_layer:
            self.pos = t1
        return keys.narrow(2, 0, t1), values.narrow(2, 0, t1)
