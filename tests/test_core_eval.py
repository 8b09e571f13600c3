"""CORE scoring checked by hand: a model with fixed logits makes choices we can predict."""

import json

import pytest
import torch
import yaml

from nanochat.core_eval import evaluate_task, load_bundle, render, score_item


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
