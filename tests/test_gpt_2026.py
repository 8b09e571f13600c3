"""The 2026 recipe's model (GPTConfig(recipe="2026")) against upstream 92d63d4's GPT (../shared/anchors, loaded by
tests/oracle_2026.py): the same weights give upstream's logits, loss and gradients (fp32; and in bf16, its GPU
dtype) for window patterns L and SSSL, through the KV cache as well (prefill, then token by token, past
sequence_len); state_dicts load strictly both ways; one seed gives upstream's initial weights; parameter counts,
FLOPs and optimizer groups as upstream's. Also, without the oracle: windowed attention against an explicit
masked softmax, flex_attention's block-mask path (eager, on a CPU) against SDPA, chunked prefill, and the
engine's greedy, batched and sampled decoding of a 2026 model."""

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from nanochat import attention
from nanochat.attention import KVCache, causal_attention
from nanochat.engine import Engine
from nanochat.gpt import GPT, GPTConfig
from oracle_2026 import upstream

# short window: ceil(256 / 4 / 128) * 128 = 128, so sequences of 256 tokens cross it; 4 query heads over 2 kv heads
SHAPE = dict(sequence_len=256, vocab_size=300, n_layer=4, n_head=4, n_kv_head=2, n_embd=128)
HEAD_DIM = SHAPE["n_embd"] // SHAPE["n_head"]


def ours_2026(pattern: str, seed: int = 0) -> GPT:
    """A 2026 model at upstream's init plus noise: no zero projection, gate or scalar hides a path."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SHAPE, recipe="2026", window_pattern=pattern))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def upstream_twin(model: GPT, dtype: str = "float32") -> torch.nn.Module:
    """Upstream's GPT with `model`'s weights (strict load)."""
    up = upstream("gpt", "2026 model", dtype)
    twin = up.GPT(up.GPTConfig(**SHAPE, window_pattern=model.config.window_pattern))
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.eval()


def tokens(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SHAPE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def by_name(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())


@pytest.mark.parametrize("pattern", ["L", "SSSL"])
def test_logits_loss_and_gradients_equal_upstreams(pattern):
    ours = ours_2026(pattern)
    theirs = upstream_twin(ours)
    x, y = tokens(2, 256), tokens(2, 256, seed=2)
    y[0, :17] = -1
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
    loss, their_loss = ours(x, y), theirs(x, y)
    torch.testing.assert_close(loss, their_loss, atol=1e-6, rtol=0)
    loss.backward()
    their_loss.backward()
    theirs_named = by_name(theirs)
    for name, p in by_name(ours).items():
        torch.testing.assert_close(p.grad, theirs_named[name].grad, atol=1e-6, rtol=1e-4, msg=name)


def test_short_windows_change_the_logits_of_sequences_longer_than_them():
    """The oracle tests above could not tell SSSL from L if the windows never cut: here they do."""
    x = tokens(1, 256)
    with torch.no_grad():
        full, windowed = ours_2026("L")(x), ours_2026("SSSL")(x)  # the same weights (same seed)
    torch.testing.assert_close(full[:, :129], windowed[:, :129], atol=1e-5, rtol=0)  # within the short window
    assert (full[:, 129:] - windowed[:, 129:]).abs().max() > 1e-3


@pytest.mark.parametrize("pattern", ["L", "SSSL"])
def test_kv_cache_decoding_equals_upstreams_and_a_full_forward(pattern):
    """A prefill of 200 tokens, then 80 tokens one at a time (past sequence_len 256, where the long window cuts
    too), against upstream's KVCache with flash_attn_with_kvcache's SDPA path, and against a forward of all 280
    tokens without a cache."""
    ours = ours_2026(pattern)
    theirs = upstream_twin(ours)
    engine_up = upstream("engine", "2026 KV cache")
    ids = tokens(2, 280)
    cache = KVCache(2, SHAPE["n_kv_head"], 280, HEAD_DIM, SHAPE["n_layer"])
    their_cache = engine_up.KVCache(2, SHAPE["n_kv_head"], 280, HEAD_DIM, SHAPE["n_layer"], "cpu", torch.float32)
    with torch.no_grad():
        mine = [ours(ids[:, :200], kv_cache=cache)] + [ours(ids[:, t:t + 1], kv_cache=cache) for t in range(200, 280)]
        their = [theirs(ids[:, :200], kv_cache=their_cache)]
        their += [theirs(ids[:, t:t + 1], kv_cache=their_cache) for t in range(200, 280)]
        full = ours(ids)
    torch.testing.assert_close(torch.cat(mine, 1), torch.cat(their, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(mine, 1), full, atol=1e-5, rtol=0)


def test_chunked_prefill_equals_a_full_forward():
    """Chunks after a cached prefix see the prefix through their windows, and smear reaches back into it for a
    chunk's first token (upstream's engine never prefills in chunks; its forward would skip that token's smear)."""
    model = ours_2026("SSSL")
    ids = tokens(2, 270)
    cache = KVCache(2, SHAPE["n_kv_head"], 270, HEAD_DIM, SHAPE["n_layer"])
    with torch.no_grad():
        parts = [model(ids[:, a:b], kv_cache=cache) for a, b in [(0, 100), (100, 230), (230, 231), (231, 270)]]
        torch.testing.assert_close(torch.cat(parts, 1), model(ids), atol=1e-5, rtol=0)


def test_bf16_compute_equals_upstreams_on_its_gpu_dtype():
    """cast_embeddings(bf16): embeddings and rotary tables in bf16, fp32 master weights cast per matmul, as
    upstream computes with COMPUTE_DTYPE bf16 (loaded here a second time with NANOCHAT_DTYPE=bfloat16)."""
    ours = ours_2026("SSSL")
    theirs = upstream_twin(ours, "bfloat16")
    theirs.transformer.wte.to(torch.bfloat16)  # what its init_weights does after initializing
    for ve in theirs.value_embeds.values():
        ve.to(torch.bfloat16)
    theirs.cos, theirs.sin = theirs.cos.bfloat16(), theirs.sin.bfloat16()
    ours.cast_embeddings(torch.bfloat16)
    assert ours.transformer.wte.weight.dtype == ours.value_embeds["1"].weight.dtype == torch.bfloat16
    masters = {p.dtype for n, p in ours.named_parameters() if "wte" not in n and "value_embeds" not in n}
    assert masters == {torch.float32}
    x, y = tokens(2, 256), tokens(2, 256, seed=2)
    with torch.no_grad():
        assert ours.hidden(x).dtype == torch.bfloat16
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)  # bf16 steps are ~1e-2 here
    loss, their_loss = ours(x, y), theirs(x, y)
    torch.testing.assert_close(loss, their_loss, atol=1e-5, rtol=0)
    loss.backward()
    their_loss.backward()
    assert ours.transformer.wte.weight.grad.dtype == torch.bfloat16
    assert ours.transformer.h[0].attn.c_q.weight.grad.dtype == torch.float32
    theirs_named = by_name(theirs)
    for name, p in by_name(ours).items():  # nanochat.fused's CPU backward of RMSNorm rounds to bf16 later: ~1 %
        reference = theirs_named[name].grad.float()
        torch.testing.assert_close(p.grad.float(), reference, atol=0.02 * reference.abs().max().item(), rtol=0,
                                   msg=name)


def test_bf16_kv_cache_takes_the_models_dtype():
    model = ours_2026("SSSL")
    model.cast_embeddings(torch.bfloat16)
    ids = tokens(1, 150)
    cache = KVCache(1, SHAPE["n_kv_head"], 150, HEAD_DIM, SHAPE["n_layer"])  # fp32 as asked, bf16 once filled
    with torch.no_grad():
        parts = [model(ids[:, :140], kv_cache=cache)]
        parts += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(140, 150)]
        full = model(ids)
    assert cache.kv.dtype == cache.embeddings.dtype == torch.bfloat16
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=5e-2, rtol=0)


def test_course_refuses_cast_embeddings_and_short_windows():
    with pytest.raises(ValueError, match="autocast"):
        GPT(GPTConfig(**SHAPE)).cast_embeddings(torch.bfloat16)
    with pytest.raises(ValueError, match="window_pattern"):
        GPT(GPTConfig(**SHAPE, window_pattern="SL"))
    with pytest.raises(ValueError, match="recipe"):
        GPT(GPTConfig(**SHAPE, recipe="2025"))


@pytest.mark.parametrize("pattern", ["L", "SSSL"])
def test_state_dicts_load_strictly_both_ways(pattern):
    ours = ours_2026(pattern)
    theirs = upstream_twin(ours)  # ours -> upstream, strict
    with torch.no_grad():
        for p in theirs.parameters():
            p.mul_(2.0)
    back = GPT(GPTConfig(**SHAPE, recipe="2026", window_pattern=pattern))
    back.load_state_dict(theirs.state_dict(), strict=True)
    assert list(back.state_dict()) == list(theirs.state_dict())  # the same names, in the same order
    for name, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_one_seed_gives_upstreams_initial_weights_and_rotary_tables():
    up = upstream("gpt", "2026 init")
    torch.manual_seed(7)
    ours = GPT(GPTConfig(**SHAPE, recipe="2026", window_pattern="SSSL"))
    ours.init_weights()
    torch.manual_seed(7)
    theirs = up.GPT(up.GPTConfig(**SHAPE, window_pattern="SSSL"))
    theirs.init_weights()
    theirs_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs_state[name]), name
    half = HEAD_DIM // 2  # ours hold [cos, cos] and [sin, -sin] over the head dim (gpt.apply_rotary)
    assert torch.equal(ours.cos[..., :half], theirs.cos) and torch.equal(ours.sin[..., :half], theirs.sin)
    assert ours.window_sizes == [w for w, _ in theirs.window_sizes] == [128, 128, 128, 256]


@pytest.mark.parametrize("depth, pattern", [(4, "SSSL"), (12, "SSSL"), (20, "L"), (24, "SSSL"), (26, "SL")])
def test_parameter_counts_and_flops_equal_upstreams(depth, pattern):
    up = upstream("gpt", "2026 FLOPs")
    config = GPTConfig.from_depth(depth, vocab_size=32768, sequence_len=2048, recipe="2026", window_pattern=pattern)
    with torch.device("meta"):
        ours = GPT(config)
        theirs = up.GPT(up.GPTConfig(sequence_len=2048, vocab_size=32768, n_layer=depth, n_head=config.n_head,
                                     n_kv_head=config.n_kv_head, n_embd=config.n_embd, window_pattern=pattern))
    assert ours.num_scaling_params() == theirs.num_scaling_params()
    assert ours.flops_per_token() == theirs.estimate_flops()


def test_optimizer_groups_are_upstreams():
    """AdamW groups (parameters, lr, betas, eps, weight decay) and one Muon group per matrix shape (sorted),
    against upstream's setup_optimizer with the same learning rates."""
    ours = ours_2026("SSSL")
    theirs = upstream_twin(ours)
    lrs = dict(unembedding_lr=0.004, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.28, scalar_lr=0.4)
    adamw, muon = ours.setup_optimizers(**lrs)
    their_groups = theirs.setup_optimizer(**lrs).param_groups
    names, their_names = {p: n for n, p in ours.named_parameters()}, {p: n for n, p in theirs.named_parameters()}
    keys = {"adamw": ("lr", "betas", "eps", "weight_decay", "initial_lr"),
            "muon": ("lr", "momentum", "ns_steps", "beta2", "weight_decay", "initial_lr")}
    mine = [("adamw", g) for g in adamw.param_groups] + [("muon", g) for g in muon.param_groups]
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["fused"]
    assert len(mine) == len(their_groups)
    for (kind, group), theirs_group in zip(mine, their_groups):
        assert kind == theirs_group["kind"]
        assert [names[p] for p in group["params"]] == [their_names[p] for p in theirs_group["params"]]
        assert {k: group[k] for k in keys[kind]} == {k: theirs_group[k] for k in keys[kind]}


def test_optimizer_groups_hold_only_the_owned_parameters():
    model = ours_2026("SSSL")
    owned = {p for i, p in enumerate(model.parameters()) if i % 2}
    optimizers = model.setup_optimizers(0.2, 0.004, 0.02, 0.1, owns=lambda p: p in owned)
    held = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
    assert len(held) == len(owned) and set(held) == owned
    assert len(optimizers[1].param_groups) == len({p.shape for p in model.transformer.h.parameters()})


def reference_attention(q, k, v, window):
    """Explicit masked softmax: query i (the last Tq of Tk positions) sees keys j with i - window <= j <= i."""
    Tq, Tk = q.size(2), k.size(2)
    i, j = torch.arange(Tk - Tq, Tk)[:, None], torch.arange(Tk)[None, :]
    allowed = (j <= i) & ((i - j <= window) if window is not None else True)
    k, v = (t.repeat_interleave(q.size(1) // t.size(1), dim=1) for t in (k, v))
    scores = (q.double() @ k.double().mT) / q.size(-1) ** 0.5
    return (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v.double()).float()


@pytest.mark.parametrize("Tq, Tk, window", [(64, 64, None), (64, 64, 16), (64, 64, 0), (64, 64, 63), (64, 64, 64),
                                            (1, 64, 16), (1, 64, 63), (1, 64, None), (20, 64, 16), (20, 64, None)])
def test_windowed_attention_equals_an_explicit_masked_softmax(Tq, Tk, window):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, Tq, 16, generator=gen)
    k, v = torch.randn(2, 2, Tk, 16, generator=gen), torch.randn(2, 2, Tk, 16, generator=gen)
    torch.testing.assert_close(causal_attention(q, k, v, window), reference_attention(q, k, v, window),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [8, 16, 32])
def test_windows_in_chunks_give_the_explicit_masked_softmaxs_gradients(window):
    """A window dividing the sequence goes through banded_attention (query chunks over their keys and the chunk
    before), with grouped-query heads: its gradients are the masked softmax's."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 64, 16, generator=gen, requires_grad=True)
    k, v = (torch.randn(2, 2, 64, 16, generator=gen, requires_grad=True) for _ in range(2))
    weights = torch.randn(2, 4, 64, 16, generator=gen)
    grads = []
    for attend in (causal_attention, reference_attention):
        (attend(q, k, v, window) * weights).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        q.grad = k.grad = v.grad = None
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_rows_at_their_own_positions_see_their_own_windows():
    """KVCache.key_mask: rows of lengths 3, 9 and 6 decoding together with a window of 4."""
    cache = KVCache(3, 1, 16, 8, 1)
    cache.set_lengths([3, 9, 6])
    mask = cache.key_mask(4)[:, 0, 0]
    expected = [[j <= n and n - j <= 4 for j in range(10)] for n in (3, 9, 6)]
    assert mask.tolist() == expected
    assert cache.key_mask(None)[:, 0, 0].tolist() == [[j <= n for j in range(10)] for n in (3, 9, 6)]


@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
def test_flex_block_mask_path_equals_sdpa(monkeypatch):
    """The CUDA path (flex_attention with a sliding-window block mask), run eagerly on this CPU, which flex
    supports forward only: the same numbers as the reference and as the model's SDPA path."""
    calls = []

    def eager_flex(*args, **kwargs):
        calls.append(kwargs["block_mask"])
        return flex_attention(*args, **kwargs)

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 256, 32, generator=gen)
    k, v = torch.randn(2, 2, 256, 32, generator=gen), torch.randn(2, 2, 256, 32, generator=gen)
    model, x = ours_2026("SSSL"), tokens(2, 256)
    with torch.no_grad():
        sdpa_logits = model(x)
        monkeypatch.setattr(attention, "FLEX_DEVICES", ("cpu",))
        monkeypatch.setattr(attention, "compiled_flex", lambda: (eager_flex, attention.sliding_window_mask))
        torch.testing.assert_close(causal_attention(q, k, v, 100), reference_attention(q, k, v, 100),
                                   atol=1e-5, rtol=0)
        assert len(calls) == 1
        torch.testing.assert_close(model(x), sdpa_logits, atol=1e-5, rtol=0)
    assert len(calls) == 1 + 3  # the model's three short-window layers


def test_flex_block_masks_are_made_once_per_shape():
    _, masks = attention.compiled_flex()
    assert masks(256, 128, torch.device("cpu")) is masks(256, 128, torch.device("cpu"))
    dense = masks(256, 128, torch.device("cpu")).to_dense()[0, 0]  # (query blocks, key blocks) of 128
    assert dense.tolist() == [[1, 0], [1, 1]]


@pytest.mark.slow
def test_compiled_flex_equals_sdpa(monkeypatch):
    """flex_attention compiled (inductor on this CPU, forward only), called from an eager model and traced into a
    compiled one: the SDPA path's logits."""
    model, x = ours_2026("SSSL"), tokens(2, 256)
    with torch.no_grad():
        sdpa_logits = model(x)
        monkeypatch.setattr(attention, "FLEX_DEVICES", ("cpu",))
        torch.testing.assert_close(model(x), sdpa_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.compile(model)(x), sdpa_logits, atol=1e-5, rtol=0)


class Tokens:
    """The engine's view of a tokenizer, its special tokens outside the vocabulary (never generated)."""
    bos_id = -1

    def special_id(self, name: str) -> int:
        return -2 - ["<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>",
                     "<|assistant_end|>"].index(name)


def test_engine_greedy_decoding_equals_full_forwards_past_the_windows():
    """Greedy with the KV cache (windows, value embeddings, smear) equals the argmax of a forward over everything
    so far, token by token, from a prompt of 230 tokens to 270 (past the short window and sequence_len)."""
    model = ours_2026("SSSL")
    prompt = tokens(230).tolist()
    [cached] = Engine(model, Tokens()).generate_batch(prompt, 1, max_tokens=40, temperature=0.0)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(40):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt):]


def test_engine_decodes_rows_at_their_own_positions_and_samples_from_one_prefill():
    """Prompts of 100 to 200 tokens decoded together (right-padded prefill, per-row windows and smear) give each
    its own greedy completion; three samples at temperature 0 continue one prefill alike."""
    engine = Engine(ours_2026("SSSL"), Tokens())
    prompts = [tokens(n, seed=n).tolist() for n in (200, 120, 164, 100)]
    alone = [engine.generate_batch(p, 1, max_tokens=30, temperature=0.0)[0] for p in prompts]
    assert engine.generate_greedy(prompts, max_tokens=30) == alone
    assert engine.generate_batch(prompts[0], 3, max_tokens=30, temperature=0.0) == [alone[0]] * 3
