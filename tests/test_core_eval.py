"""CORE scoring checked by hand: a model with fixed logits makes choices we can predict."""

import json
import random
import re

import pytest
import torch
import yaml

from conftest import upstream_module
from nanochat import core_eval, layout
from nanochat.checkpoint import load_model
from nanochat.core_eval import batches, evaluate_task, load_bundle, render, score_item, scored_spans, task_items
from nanochat.dataset import iter_texts
from nanochat.tokenizer import Tokenizer


class CharTokenizer:
    """One token per character (id = code point), BOS = 0: token positions are easy to reason about."""
    def encode(self, text, prepend_bos=False):
        return [0] * prepend_bos + [ord(c) for c in text]


class FavoursA(torch.nn.Module):
    """Predicts 'a' everywhere: logit 5 for 'a', 0 for every other token, whatever the input."""
    config = type("Config", (), {"sequence_len": 64})

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, 128)
        logits[..., ord("a")] = 5.0
        return logits

    def hidden(self, ids, kv_cache=None):  # the scorer takes hidden states, then the head's logits of the scored ones
        return self.forward(ids)  # (prompts too short for a shared prefix: no cache)

    def logits(self, hidden):
        return hidden


def test_multiple_choice_picks_the_continuation_with_the_lowest_mean_loss():
    model, tok = FavoursA(), CharTokenizer()
    item = {"query": "Q", "choices": ["bbb", "aab", "aaa"], "gold": 2}
    assert score_item(model, tok, "multiple_choice", item, [], " ")
    assert not score_item(model, tok, "multiple_choice", {**item, "gold": 1}, [], " ")


class AAfterX(FavoursA):
    """Predicts 'a' everywhere when the text starts with 'x', else 'b'."""
    def forward(self, ids):
        logits = torch.zeros(*ids.shape, 128)
        starts_with_x = (ids[:, 1] == ord("x")).view(-1, 1)
        logits[..., ord("a")] = torch.where(starts_with_x, 5.0, 0.0)
        logits[..., ord("b")] = torch.where(starts_with_x, 0.0, 5.0)
        return logits


def test_schema_scores_the_shared_continuation_after_each_context():
    item = {"context_options": ["yy", "xy"], "continuation": "aa", "gold": 1}
    assert score_item(AAfterX(), CharTokenizer(), "schema", item, [], " ")
    assert not score_item(AAfterX(), CharTokenizer(), "schema", {**item, "gold": 0}, [], " ")


def test_language_modeling_needs_every_continuation_token_right():
    model, tok = FavoursA(), CharTokenizer()
    assert score_item(model, tok, "language_modeling", {"context": "zz", "continuation": "aaa"}, [], "")
    assert not score_item(model, tok, "language_modeling", {"context": "zz", "continuation": "aab"}, [], "")


def test_fewshot_examples_precede_the_item_with_their_gold_answers():
    shot = {"query": "Q1", "choices": ["x", "y"], "gold": 1}
    texts = render("multiple_choice", {"query": "Q2", "choices": ["a", "b"], "gold": 0}, [shot], ": ")
    assert texts == ["Q1: y\n\nQ2: a", "Q1: y\n\nQ2: b"]


def test_mini_bundle_gives_the_hand_computed_centered_accuracy(tmp_path):
    # 4 items; the model picks the all-'a' choice; gold is that choice in 3 of them -> accuracy 3/4.
    items = [{"query": f"q{i}", "choices": ["aaaa", "bbbb"], "gold": 0 if i < 3 else 1} for i in range(4)]
    (tmp_path / "eval_data").mkdir()
    (tmp_path / "eval_data" / "mini.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (tmp_path / "core.yaml").write_text(yaml.safe_dump({"icl_tasks": [
        {"label": "mini", "dataset_uri": "mini.jsonl", "num_fewshot": [2], "icl_task_type": "multiple_choice"}]}))
    (tmp_path / "eval_meta_data.csv").write_text("Eval Task,Random baseline\nmini,50.0\n")
    [task] = load_bundle(tmp_path)
    result = evaluate_task(FavoursA(), CharTokenizer(), task, max_items=0)
    assert result["accuracy"] == 0.75 and result["n"] == 4
    assert result["centered"] == pytest.approx((0.75 - 0.5) / 0.5)


def test_language_modeling_contexts_are_stripped_and_the_delimiter_is_scored_with_the_continuation():
    # Upstream strips the context (some bundle items end in whitespace) and the prompt without the
    # continuation: the delimiter belongs to the scored tokens. Hand-derived with one token per character.
    shot = {"context": "yy \n", "continuation": "b"}
    texts = render("language_modeling", {"context": "zz  ", "continuation": "aaa"}, [shot], " ")
    assert texts == ["yy b\n\nzz", "yy b\n\nzz aaa"]
    seqs, spans = scored_spans("language_modeling", [CharTokenizer().encode(t, prepend_bos=True) for t in texts])
    assert spans == [(len("yy b\n\nzz") + 1, len("yy b\n\nzz aaa") + 1)]  # " aaa", after BOS
    assert not score_item(FavoursA(), CharTokenizer(), "language_modeling", {"context": "zz ", "continuation": "aaa"},
                          [], " ")  # it predicts 'a', not the space before it


def test_sequences_longer_than_the_context_keep_their_end():
    # 70 characters + BOS in a 64-token model: the first 7 tokens go, the options (at the end) stay.
    item = {"query": "q" * 66, "choices": ["bbb", "aaa"], "gold": 1}
    assert score_item(FavoursA(), CharTokenizer(), "multiple_choice", item, [], " ")


# --- item by item against upstream 48abd7d's scorer (../shared/anchors), on a trained model ---------------
# A bundle in the real format made of King James verses the model has not trained on, exercising every
# scoring rule: few-shot 0/3/5, language-modeling contexts ending in whitespace, sequences longer than the
# model's context (256 tokens), and tasks cropped by max_per_task before their few-shot examples are drawn.

TASKS = [("mc_0shot", "multiple_choice", 0, " "), ("mc_3shot", "multiple_choice", 3, " "),
         ("schema_5shot", "schema", 5, " "), ("lm_0shot", "language_modeling", 0, " "),
         ("lm_3shot", "language_modeling", 3, " "), ("lm_5shot", "language_modeling", 5, "\n")]


@pytest.fixture(scope="module")
def upstream():
    """Upstream's nanochat/core_eval.py."""
    return upstream_module("core_eval", "CORE")


class UpstreamTokenizer:
    """Our tokenizer behind upstream's interface (the tokens are the same by construction: what is compared
    is how prompts are rendered, cut and scored)."""
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, texts, prepend):
        return [[prepend] + self.tokenizer.encode(t) for t in texts]

    def get_bos_token_id(self):
        return self.tokenizer.bos_id


class UpstreamModel:
    """Our model as upstream scores a model with a context limit: logits from a call, `max_seq_len`."""
    def __init__(self, model):
        self.model, self.max_seq_len = model, model.config.sequence_len

    def __call__(self, ids):
        return self.model(ids)


@pytest.fixture(scope="module")
def trained(straight_run):
    """The tiny base model of a real run, its tokenizer, and the words of its validation shard."""
    base = straight_run / ".nanochat"
    model, _ = load_model(base / layout.CHECKPOINTS["base"])
    tokenizer = Tokenizer.load(base / layout.TOKENIZER / "tokenizer.json")
    val = sorted((base / "base_data").rglob("shard_*.parquet"))[-1]
    return model, tokenizer, " ".join(iter_texts([val], max_chars=300_000)).split()


def greedy_word(model, tokenizer: Tokenizer, context: str) -> str | None:
    """The word the model predicts after `context`, if its next token is one (so that an item is right)."""
    ids = [tokenizer.bos_id] + tokenizer.encode(context)
    with torch.no_grad():
        token = model(torch.tensor([ids[-model.config.sequence_len:]]))[0, -1].argmax().item()
    text = tokenizer.decode([token])
    return text[1:] if re.fullmatch(r" [A-Za-z]+", text) else None


def make_bundle(folder, model, tokenizer: Tokenizer, words: list[str]) -> None:
    rng = random.Random(0)

    def text(n: int) -> str:
        start = rng.randrange(len(words) - n)
        return " ".join(words[start:start + n])

    def context() -> str:  # one in six longer than the model's 256-token context
        return text(300 if rng.random() < 1 / 6 else rng.randint(6, 25)) + rng.choice(["", " ", "\n", "  \n", "\t"])

    def item(task_type: str) -> dict:
        if task_type == "multiple_choice":
            return {"query": context().rstrip(), "choices": [text(rng.randint(1, 3)) for _ in range(4)],
                    "gold": rng.randrange(4)}
        if task_type == "schema":
            return {"context_options": [text(rng.randint(3, 12)) for _ in range(3)], "continuation": text(4),
                    "gold": rng.randrange(3)}
        ctx = context()
        word = greedy_word(model, tokenizer, ctx.strip()) if rng.random() < 0.5 else None
        return {"context": ctx, "continuation": word or text(rng.randint(1, 2))}

    (folder / "eval_data").mkdir()
    tasks, baselines = [], ["Eval Task,Random baseline"]
    for label, task_type, shots, delimiter in TASKS:
        items = [item(task_type) for _ in range(24)]
        (folder / "eval_data" / f"{label}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
        tasks.append({"label": label, "dataset_uri": f"{label}.jsonl", "num_fewshot": [shots],
                      "icl_task_type": task_type, "continuation_delimiter": delimiter})
        baselines.append(f"{label},{25.0 if task_type == 'multiple_choice' else 0.0}")
    (folder / "core.yaml").write_text(yaml.safe_dump({"icl_tasks": tasks}))
    (folder / "eval_meta_data.csv").write_text("\n".join(baselines) + "\n")


def test_every_item_is_scored_as_upstream_scores_it(tmp_path, trained, upstream):
    model, tokenizer, words = trained
    make_bundle(tmp_path, model, tokenizer, words)
    up_model, up_tokenizer = UpstreamModel(model), UpstreamTokenizer(tokenizer)
    render_upstream = {"multiple_choice": upstream.render_prompts_mc, "schema": upstream.render_prompts_schema,
                       "language_modeling": upstream.render_prompts_lm}
    batch_upstream = {"multiple_choice": upstream.batch_sequences_mc, "schema": upstream.batch_sequences_schema,
                      "language_modeling": upstream.batch_sequences_lm}
    outcomes, long_items = {}, 0
    for task in load_bundle(tmp_path):
        for max_items in (16, -1):  # cropped (few-shot examples drawn from the 16) and whole
            # upstream's scripts/base_eval.py: shuffle with Random(1337), then crop
            data = [json.loads(line) for line in (tmp_path / "eval_data" / f"{task['label']}.jsonl").open()]
            random.Random(1337).shuffle(data)
            data = data[:max_items] if max_items > 0 else data
            assert task_items(task, max_items) == data
            meta = {"task_type": task["task_type"], "num_fewshot": task["num_fewshot"],
                    "continuation_delimiter": task["delimiter"]}
            for idx, it in enumerate(data):  # the prompts, tokens and scored spans, exactly
                fewshot = [data[i] for i in random.Random(1234 + idx).sample(
                    [i for i in range(len(data)) if i != idx], task["num_fewshot"])] if task["num_fewshot"] else []
                texts = render(task["task_type"], it, fewshot, task["delimiter"])
                assert texts == render_upstream[task["task_type"]](it, task["delimiter"], fewshot), (task["label"], idx)
                tokens, starts, ends = batch_upstream[task["task_type"]](up_tokenizer, texts)
                seqs, spans = scored_spans(task["task_type"], up_tokenizer(texts, tokenizer.bos_id))
                assert (seqs, spans) == (tokens, list(zip(starts, ends))), (task["label"], idx)
                long_items += max(map(len, seqs)) > model.config.sequence_len
            ours = evaluate_task(model, tokenizer, task, max_items)["correct"]  # one item per forward
            theirs = [upstream.evaluate_example(i, up_model, up_tokenizer, data, "cpu", meta) for i in range(len(data))]
            assert ours == theirs, task["label"]
            batched = evaluate_task(model, tokenizer, task, max_items, batch_tokens=4096)["correct"]
            assert batched == theirs, (task["label"], "batched")
            outcomes[task["label"], max_items] = ours
    print({label: f"{sum(o)}/{len(o)}" for label, o in outcomes.items()})
    assert long_items >= 10, "the bundle must exercise sequences longer than the context"
    for task_type in ("mc", "schema", "lm"):  # both outcomes occur, so agreement is not agreement on a constant
        mixed = [o for (label, _), o in outcomes.items() if label.startswith(task_type)]
        assert any(any(o) for o in mixed) and not all(all(o) for o in mixed), task_type


def test_batches_hold_as_many_rows_of_similar_lengths_within_the_token_budget():
    prepared = [([[0] * n] * rows, [], None) for n, rows in [(50, 4), (10, 2), (300, 4), (12, 2), (49, 4)]]
    groups = batches(prepared, batch_tokens=400)
    assert sorted(i for g in groups for i in g) == list(range(5))
    assert groups == [[1, 3], [4, 0], [2]]  # 2 rows each; (49, 50): 8 rows x 50; 300 alone (over budget)
    assert batches(prepared, batch_tokens=1) == [[1], [3], [4], [0], [2]]


class ScoredLogits:
    """The model, keeping the logits the scorer computes."""
    def __init__(self, model):
        self.model, self.config, self.lm_head, self.hidden = model, model.config, model.lm_head, model.hidden
        self.seen = []

    def logits(self, hidden):
        self.seen.append(self.model.logits(hidden))
        return self.seen[-1]


@pytest.mark.parametrize("task_type", ["multiple_choice", "schema"])
def test_a_prefix_shared_by_the_rows_runs_once_with_the_logits_of_full_rows(trained, task_type, monkeypatch):
    model, tokenizer, words = trained
    rng = random.Random(1)

    def text(n: int) -> str:
        start = rng.randrange(len(words) - n)
        return " ".join(words[start:start + n])

    def item() -> dict:  # sharing prefixes of different lengths: one batch runs the shortest once per item
        if task_type == "multiple_choice":
            return {"query": text(rng.randint(30, 60)), "choices": [text(rng.randint(1, 4)) for _ in range(4)],
                    "gold": 0}
        return {"context_options": [text(rng.randint(3, 9)) for _ in range(3)], "continuation": text(4), "gold": 0}

    fewshot = [] if task_type == "multiple_choice" else [item() for _ in range(5)]
    prepared = [(*core_eval.prepare(model, tokenizer, task_type, it, fewshot, " "), 0) for it in (item(), item())]
    assert min(core_eval.shared_prefix(seqs, spans) for seqs, spans, _ in prepared) * 2 >= core_eval.PREFIX_SAVING_MIN
    scorer = ScoredLogits(model)
    shared = core_eval.score_batch(scorer, task_type, prepared)
    monkeypatch.setattr(core_eval, "PREFIX_SAVING_MIN", 10**9)  # every row whole
    assert core_eval.score_batch(scorer, task_type, prepared) == shared
    torch.testing.assert_close(scorer.seen[0], scorer.seen[1], rtol=1e-5, atol=1e-5)


def test_a_continuation_that_merges_into_its_context_is_an_error_as_upstream(trained, upstream):
    model, tokenizer, words = trained
    # a word whose tokens change when its last letter is added: its stem is not a token prefix of it
    word = next(w for w in words if w.isalpha() and len(w) > 3 and tokenizer.encode(w)[:len(tokenizer.encode(w[:-1]))]
                != tokenizer.encode(w[:-1]))
    item = {"context": word[:-1], "continuation": word[-1]}
    texts = render("language_modeling", item, [], "")
    with pytest.raises(AssertionError):
        upstream.batch_sequences_lm(UpstreamTokenizer(tokenizer), texts)
    with pytest.raises(ValueError, match="not a token prefix"):
        score_item(model, tokenizer, "language_modeling", item, [], "")
