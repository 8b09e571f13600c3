"""nanochat's 2026 GPT (upstream nanochat 92d63d4, GPTConfig recipe "2026") for Hugging Face transformers.

`python -m nanochat.scripts.export` copies this file into the folder it writes; config.json's "auto_map" names the
two classes below, so the folder loads with

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

transformers' own NanoChatForCausalLM cannot hold this model: it has none of value embeddings, smear, backout,
the per-layer lambdas or sliding windows. This file needs torch and transformers only, and computes nanochat's
forward pass step by step (nanochat/gpt.py; each addition over transformers' NanoChat has its line below).
The weights keep nanochat's parameter names and shapes (embedding and head padded to a multiple of 64 rows), so a
folder's model.safetensors loads into nanochat's GPT as it is, and back.

Generation: no KV cache. generate() runs the whole sequence again for every new token (config use_cache is False),
exactly the training forward, so the windows and the smear need no decoding-time bookkeeping; slower for long
outputs. Refused with an error rather than computed differently: padding (an attention_mask with zeros: nanochat
has no padding; generate one prompt at a time or prompts of equal length), inputs_embeds (value embeddings are
looked up by token id), a cache or use_cache=True, position_ids, attention weights and hidden states as outputs.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

SOFTCAP = 15.0  # logits = 15 tanh(logits / 15)
ROPE_THETA = 100_000.0  # rotary base
QK_SCALE = 1.2  # q and k after the QK norm: sharper attention
VE_GATE_CHANNELS = 12  # the value-embedding gate reads the first 12 channels of the block's input
SMEAR_CHANNELS = 24  # the smear gate reads the first 24 channels of the token's embedding
REFUSED = ("inputs_embeds", "position_ids", "cache", "past_key_values", "output_attentions", "output_hidden_states")


class NanoChat2026Config(PretrainedConfig):
    """nanochat's GPTConfig (recipe "2026"): vocab_size is the tokenizer's; the weights pad it to a multiple of
    pad_vocab_size_to."""

    model_type = "nanochat_2026"  # not transformers' "nanochat": that model would load these weights wrongly
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                     "num_key_value_heads": "n_kv_head", "max_position_embeddings": "sequence_len"}

    def __init__(self, vocab_size: int = 32768, sequence_len: int = 2048, n_layer: int = 12, n_head: int = 6,
                 n_kv_head: int = 6, n_embd: int = 768, window_pattern: str = "SSSL", pad_vocab_size_to: int = 64,
                 use_cache: bool = False, **kwargs):
        self.vocab_size = vocab_size
        self.sequence_len = sequence_len
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_kv_head = n_kv_head
        self.n_embd = n_embd
        self.window_pattern = window_pattern
        self.pad_vocab_size_to = pad_vocab_size_to
        self.use_cache = use_cache  # no KV cache: see the module docstring
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


def has_ve(layer_idx: int, n_layer: int) -> bool:
    """Value embeddings on alternating layers, the last layer always included."""
    return layer_idx % 2 == (n_layer - 1) % 2


def window_sizes(config: NanoChat2026Config) -> list[int]:
    """Per layer, how many earlier tokens a query sees (the window's left size; it sees itself too): window_pattern
    tiled over the layers, L the context (sequence_len), S a quarter of it rounded up to 128; the last layer L."""
    pattern = config.window_pattern.upper()
    if not pattern or set(pattern) - set("SL"):
        raise ValueError(f"window_pattern {config.window_pattern!r}: use only S and L")
    long = config.sequence_len
    short = -(-long // (4 * 128)) * 128
    sizes = [short if pattern[i % len(pattern)] == "S" else long for i in range(config.n_layer)]
    sizes[-1] = long
    return sizes


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without weights, eps the dtype's."""
    return F.rms_norm(x, (x.size(-1),))


def rotary(seq_len: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, shaped (1, seq_len, 1, head_dim / 2), computed in float32 and cast to `dtype`."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return freqs.cos().to(dtype)[None, :, None, :], freqs.sin().to(dtype)[None, :, None, :]


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head's channels by the position's angles (x: batch, time, heads, channels)."""
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3)


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention where query i sees keys i - window .. i (q, k, v: batch, heads, time, channels)."""
    T = q.size(2)
    gqa = q.size(1) != k.size(1)
    if window >= T - 1:  # every earlier key lies inside the window
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    position = torch.arange(T, device=q.device)
    distance = position[:, None] - position[None, :]
    mask = (distance >= 0) & (distance <= window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: NanoChat2026Config, layer_idx: int):
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate = (nn.Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False)
                        if has_ve(layer_idx, config.n_layer) else None)

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple, window: int) -> torch.Tensor:
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:  # value embedding mixed into v, gated per head by 3 sigmoid(.) in (0, 3)
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rotary_emb(q, *cos_sin), apply_rotary_emb(k, *cos_sin)
        q, k = norm(q) * QK_SCALE, norm(k) * QK_SCALE
        y = windowed_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), window)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: NanoChat2026Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: NanoChat2026Config, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple, window: int) -> torch.Tensor:
        x = x + self.attn(norm(x), ve, cos_sin, window)
        return x + self.mlp(norm(x))


class NanoChat2026ForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = NanoChat2026Config
    _no_split_modules = ["Block"]

    def __init__(self, config: NanoChat2026Config):
        super().__init__(config)
        padded_vocab = -(-config.vocab_size // config.pad_vocab_size_to) * config.pad_vocab_size_to
        kv_dim = config.n_kv_head * (config.n_embd // config.n_head)
        self.window_sizes = window_sizes(config)
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(padded_vocab, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, padded_vocab, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))  # scale the residual stream before each layer
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))  # mix the first layer's input back in
        self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
        self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.backout_lambda = nn.Parameter(torch.zeros(1))
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(padded_vocab, kv_dim)
                                           for i in range(config.n_layer) if has_ve(i, config.n_layer)})
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no KV cache: generate() must not make one

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """nanochat's GPT.forward without targets: float32 logits (batch, time, vocab_size)."""
        T = idx.size(1)
        head_dim = self.config.n_embd // self.config.n_head
        x = norm(self.transformer.wte(idx))
        cos_sin = rotary(T, head_dim, x.device, x.dtype)
        # Smear: each token's embedding gets the previous one's, gated by smear_lambda sigmoid(.)
        gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :SMEAR_CHANNELS]))
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        x0 = x  # the first layer's input, mixed back in by x0_lambdas
        backout_layer = self.config.n_layer // 2
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos_sin, self.window_sizes[i])
            if i == backout_layer:
                x_backout = x
        # Backout: the middle layer's residual, scaled by backout_lambda, is taken out before the head
        x = norm(x - self.backout_lambda * x_backout)
        logits = self.lm_head(x)[..., :self.config.vocab_size].float()  # the padding rows are no tokens
        return SOFTCAP * torch.tanh(logits / SOFTCAP)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> CausalLMOutputWithPast | tuple:
        """Logits, and with `labels` (the input ids, -100 where ignored) the mean next-token loss."""
        refused = [name for name in REFUSED if kwargs.get(name) is not None and kwargs.get(name) is not False]
        if use_cache:
            refused.append("use_cache=True")
        if attention_mask is not None and not bool(attention_mask.all()):
            refused.append("padding (an attention_mask with zeros)")
        if refused:
            raise ValueError(f"nanochat 2026 model: not supported: {', '.join(refused)} (see {__name__}'s docstring)")
        logits = self.logits(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        output = CausalLMOutputWithPast(loss=loss, logits=logits)
        return output if return_dict is not False else output.to_tuple()
