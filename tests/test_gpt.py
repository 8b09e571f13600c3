import pytest
import torch

from nanochat.attention import KVCache
from nanochat.gpt import GPT, GPTConfig


def test_d20_has_upstreams_561m_parameters():
    config = GPTConfig.from_depth(20, vocab_size=65536, sequence_len=2048)
    assert (config.n_embd, config.n_head) == (1280, 10)
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == 2 * 65536 * 1280 + 20 * 12 * 1280 ** 2  # 560,988,160
    assert 560e6 < model.num_params() < 562e6


def test_vocab_is_padded_to_64_but_logits_are_not():
    model = GPT(GPTConfig.from_depth(1, vocab_size=300, sequence_len=16))
    model.init_weights()
    assert model.padded_vocab == 320
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 300)


@pytest.mark.parametrize("n_kv_head", [0, 1])
def test_kv_cache_gives_the_same_logits_as_a_full_forward(n_kv_head):
    torch.manual_seed(0)
    config = GPTConfig.from_depth(2, vocab_size=128, sequence_len=32, model_dim=128, n_kv_head=n_kv_head)
    model = GPT(config)
    model.init_weights()
    for block in model.transformer.h:  # zero-initialized projections would hide attention bugs
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.02)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.02)
    ids = torch.randint(0, 128, (2, 12))
    full = model(ids)
    cache = KVCache(2, config.n_kv_head, 12, 128 // config.n_head, config.n_layer)
    parts = [model(ids[:, :5], kv_cache=cache), model(ids[:, 5:9], kv_cache=cache)]  # prefill, chunk
    parts += [model(ids[:, i:i + 1], kv_cache=cache) for i in range(9, 12)]  # single-token decode
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_loss_ignores_targets_of_minus_one_and_logits_are_capped():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, vocab_size=64, sequence_len=8))
    model.init_weights()
    torch.nn.init.normal_(model.lm_head.weight, std=100.0)
    x = torch.randint(0, 64, (1, 8))
    assert model(x).abs().max() <= 15.0
    y = torch.randint(0, 64, (1, 8))
    masked = y.clone()
    masked[0, 4:] = -1
    per_token = model(x, y, loss_reduction="none")
    torch.testing.assert_close(model(x, masked), per_token[:4].mean())
