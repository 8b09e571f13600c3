import logging

import torch

from nanochat.checkpoint import StepCheckpoints
from nanochat.compute import Compute
from nanochat.gpt import GPT, GPTConfig


def make_model(seed):
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_depth(1, vocab_size=64, sequence_len=8))
    model.init_weights()
    return model, model.setup_optimizers(0.2, 0.004, 0.02, 0.0)


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    ckpts = StepCheckpoints(tmp_path, Compute(torch.device("cpu")))
    for step, seed in ((10, 1), (20, 2)):
        model, opts = make_model(seed)
        ckpts.save(step, model, opts, loader_state=[(step, 0)], meta={"history": []})
    newest = tmp_path / "step_000020" / "model.pt"
    newest.write_bytes(newest.read_bytes()[:1000])

    restored, opts = make_model(99)
    with caplog.at_level(logging.WARNING):
        meta, loader_state = ckpts.load_latest(restored, opts)
    assert meta["step"] == 10 and loader_state == [(10, 0)]
    assert "step_000020 is unusable" in caplog.text and "falling back" in caplog.text
    expected, _ = make_model(1)
    for a, b in zip(restored.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(a, b)


def test_incomplete_folder_is_ignored_and_old_ones_are_pruned(tmp_path):
    ckpts = StepCheckpoints(tmp_path, Compute(torch.device("cpu")))
    model, opts = make_model(0)
    for step in (1, 2, 3):
        ckpts.save(step, model, opts, loader_state=[], meta={})
    (tmp_path / "step_000004").mkdir()  # killed before meta.json was written
    assert [d.name for d in ckpts.complete()] == ["step_000003", "step_000002"]
