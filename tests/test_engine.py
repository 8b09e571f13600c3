"""Inference engine and calculator tool."""

import pytest
import torch

from nanochat.engine import Engine, PromptTooLong, use_calculator
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(["The answer is 42. What is 12*3? It is 36."] * 5, vocab_size=300)


def random_model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=vocab_size, sequence_len=64, model_dim=128))
    model.init_weights()
    for block in model.transformer.h:  # zero projections would make every position alike
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    return model.eval()


def test_greedy_with_kv_cache_equals_recomputing_everything(tokenizer):
    model = random_model(tokenizer.vocab_size)
    prompt = tokenizer.encode("The answer is", prepend_bos=True)
    engine = Engine(model, tokenizer)
    engine.stop = set()  # compare all 30 tokens even if a stop token comes up
    [cached] = engine.generate_batch(prompt, 1, max_tokens=30, temperature=0.0)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt):]


def test_prompts_decoded_together_give_each_prompt_its_own_greedy_completion(tokenizer):
    engine = Engine(random_model(tokenizer.vocab_size), tokenizer)
    texts = ["The answer is", "What is 12*3? It is", "42", "It is 36. The answer is 42. What"]
    prompts = [tokenizer.encode(t, prepend_bos=True) for t in texts]
    assert len({len(p) for p in prompts}) == len(prompts)  # every row at its own position
    engine.stop = set()
    free = [engine.generate_batch(p, 1, max_tokens=24, temperature=0.0)[0] for p in prompts]
    assert engine.generate_greedy(prompts, max_tokens=24) == free
    # a stop token that ends the rows at different steps (and one row never): each stops on its own
    stop = next(t for t in free[0][3:] if t not in free[1])
    engine.stop = {stop}
    alone = [engine.generate_batch(p, 1, max_tokens=24, temperature=0.0)[0] for p in prompts]
    assert len({len(c) for c in alone}) > 1 and any(len(c) == 24 for c in alone)
    assert engine.generate_greedy(prompts, max_tokens=24) == alone


def test_prompts_decode_together_under_bf16_autocast(tokenizer):
    """chat_eval decodes under bf16 autocast on CUDA (and on CPUs with AMX): the fp32 cache takes the bf16
    keys and values of rows at their own positions, and each row still gets its own greedy completion."""
    engine = Engine(random_model(tokenizer.vocab_size), tokenizer)
    engine.stop = set()
    prompts = [tokenizer.encode(t, prepend_bos=True) for t in ["The answer is", "What is 12*3? It is"]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        alone = [engine.generate_batch(p, 1, max_tokens=12, temperature=0.0)[0] for p in prompts]
        assert engine.generate_greedy(prompts, max_tokens=12) == alone


def test_samples_share_the_prefill_but_differ(tokenizer):
    engine = Engine(random_model(tokenizer.vocab_size), tokenizer)
    samples = engine.generate_batch(tokenizer.encode("What is", prepend_bos=True), 4, max_tokens=12,
                                    temperature=1.0, seed=1)
    assert len(samples) == 4 and len({tuple(s) for s in samples}) > 1


@pytest.mark.parametrize("top_p, nucleus", [(0.7, {0, 1}), (0.5, {0}), (0.95, {0, 1, 2}), (1.0, {0, 1, 2, 3})])
def test_top_p_draws_from_the_smallest_set_of_likeliest_tokens_that_reaches_it(top_p, nucleus):
    """Probabilities 0.5, 0.3, 0.15, 0.05: the nucleus of top_p is the likeliest tokens until their sum
    reaches top_p; within it the draws keep their relative frequencies (here 0.5 : 0.3 for top_p 0.7)."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(4000, -1)
    draws = torch.tensor(Engine._sample(logits, 1.0, 0, top_p, torch.Generator().manual_seed(0)))
    assert set(draws.tolist()) == nucleus
    if top_p == 0.7:
        assert (draws == 0).float().mean().item() == pytest.approx(0.5 / 0.8, abs=0.03)


def test_a_completion_ends_where_the_models_positions_do(tokenizer):
    """Prompt and completion share the model's positions (ten times its sequence length, 640 here): a long
    prompt's completion is cut where they run out (before, the model raised there), and a prompt that leaves
    none is refused before any work."""
    model = random_model(tokenizer.vocab_size)
    engine = Engine(model, tokenizer)
    engine.stop = set()
    assert engine.context == model.rotary_len == 640
    prompt = [tokenizer.bos_id] * 636
    [completion] = engine.generate_batch(prompt, 1, max_tokens=30, temperature=0.0)
    assert len(completion) == engine.room(len(prompt)) == 4
    with pytest.raises(PromptTooLong, match="640 positions"):
        next(engine.generate([tokenizer.bos_id] * 640, max_tokens=1))


class Scripted(torch.nn.Module):
    """A stand-in model that writes a fixed script, one token per position, whatever it is fed."""

    def __init__(self, script: list[int], vocab_size: int):
        super().__init__()
        self.script, self.vocab_size = script, vocab_size
        self.config = GPTConfig(64, vocab_size, 1, 1, 1, 64)
        self.rotary_len = 640  # the positions it has, as GPT's (Engine.context)
        self.lm_head = torch.nn.Linear(1, 1)
        self.fed: list[list[int]] = []

    def forward(self, ids, kv_cache=None):
        self.fed.append(ids[:, -1].tolist())
        n = len(self.fed) - 1  # how many tokens have been generated so far
        logits = torch.zeros(ids.size(0), ids.size(1), self.vocab_size)
        logits[:, -1, self.script[min(n, len(self.script) - 1)]] = 10.0
        kv_cache.pos += ids.size(1)
        return logits

    def hidden(self, ids, kv_cache=None):  # the prefill takes the head of its last position only
        return self(ids, kv_cache)

    def logits(self, hidden):
        return hidden


def test_calculator_output_is_forced_back_into_the_completion(tokenizer):
    sp = tokenizer.special_id
    expr = tokenizer.encode("12*3")
    script = [sp("<|python_start|>"), *expr, sp("<|python_end|>"), 0, 0, 0, 0, sp("<|assistant_end|>")]
    model = Scripted(script, tokenizer.vocab_size)
    [out] = Engine(model, tokenizer).generate_batch([tokenizer.bos_id], 1, max_tokens=30, temperature=0.0)
    forced = [sp("<|output_start|>"), *tokenizer.encode("36"), sp("<|output_end|>")]
    start = len(expr) + 2
    assert out[:start + len(forced)] == [sp("<|python_start|>"), *expr, sp("<|python_end|>"), *forced]
    assert [f[0] for f in model.fed[start + 1:start + 1 + len(forced)]] == forced  # the model was fed them


@pytest.mark.parametrize("expr, value", [("12*3", "36"), ("7/2", "3.5"), ("(1+2)*4 - 1", "11"),
                                         ("1,000 + 1", "1001"), ("'strawberry'.count('r')", "3")])
def test_calculator_evaluates_whitelisted_expressions(expr, value):
    assert use_calculator(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "2**999999999", "open('/etc/passwd')",
                                  "1/0", "'a'.count('a') + 1", "x" * 200, "[].__class__"])
def test_calculator_refuses_anything_else(expr):
    assert use_calculator(expr) is None
