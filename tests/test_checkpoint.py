import json
import logging

import pytest
import torch

from nanochat.checkpoint import StepCheckpoints, find_model, read_attempts
from nanochat.compute import Compute
from nanochat.gpt import GPT, GPTConfig


def make_model(seed):
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_depth(1, vocab_size=64, sequence_len=8))
    model.init_weights()
    return model, model.setup_optimizers(0.2, 0.004, 0.02, 0.0)


def checkpoints(root):
    return StepCheckpoints(root, Compute(torch.device("cpu")))


def test_an_unreadable_checkpoint_is_moved_aside_and_never_pruned(tmp_path, caplog):
    """The newest checkpoint does not load: the run resumes from the one before, and the newer files survive
    every later save, out of the way under another name."""
    ckpts = checkpoints(tmp_path)
    for step, seed in ((10, 1), (20, 2)):
        model, opts = make_model(seed)
        ckpts.save(step, model, opts, loader_state={0: (step, 0)}, meta={"history": []})
    newest = tmp_path / "step_000020" / "model.pt"
    truncated = newest.read_bytes()[:1000]
    newest.write_bytes(truncated)

    restored, opts = make_model(99)
    with caplog.at_level(logging.WARNING):
        meta, loader_state = ckpts.load_latest(restored, opts)
    assert meta["step"] == 10 and loader_state == {0: (10, 0)}
    assert "step_000020 is unusable" in caplog.text and "falling back" in caplog.text
    expected, _ = make_model(1)
    for a, b in zip(restored.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(a, b)
    [aside] = tmp_path.glob("step_000020.unusable-*")
    assert (aside / "model.pt").read_bytes() == truncated and str(aside) in caplog.text

    for step in (11, 12, 13, 20, 21):  # the resumed run goes on, past the step of the unusable one
        ckpts.save(step, restored, opts, loader_state={0: (step, 0)}, meta={"history": []})
    assert [d.name for d in ckpts.complete()] == ["step_000021", "step_000020"]
    assert (aside / "model.pt").read_bytes() == truncated


class RunsCode:
    """Unpickling it calls open(path, "w"): what a hostile training.pt could do with any function."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_training_state_that_would_run_code_is_never_unpickled(tmp_path, caplog):
    """training.pt loads as tensors and plain types only (weights_only): a pickle that calls a function makes
    the checkpoint unusable, moved aside, and nothing in it runs."""
    ckpts = checkpoints(tmp_path / "run")
    model, opts = make_model(1)
    for step in (10, 20):
        ckpts.save(step, model, opts, loader_state={0: (step, 0)}, meta={"history": []})
    marker = tmp_path / "code-ran"
    state = torch.load(tmp_path / "run" / "step_000020" / "training.pt", weights_only=True)
    torch.save({**state, "loader": RunsCode(marker)}, tmp_path / "run" / "step_000020" / "training.pt")
    restored, opts = make_model(99)
    with caplog.at_level(logging.WARNING):
        meta, loader_state = ckpts.load_latest(restored, opts)
    assert not marker.exists()
    assert meta["step"] == 10 and loader_state == {0: (10, 0)} and "step_000020 is unusable" in caplog.text


def test_pruning_keeps_the_saved_checkpoint_and_the_one_before_and_never_a_newer_one(tmp_path):
    ckpts = checkpoints(tmp_path)
    model, opts = make_model(0)
    for step in (1, 2, 3, 50, 4):  # 50: newer than the step saved last, whoever wrote it
        ckpts.save(step, model, opts, loader_state={}, meta={})
    (tmp_path / "step_000005").mkdir()  # killed before meta.json was written
    assert [d.name for d in ckpts.complete()] == ["step_000050", "step_000004", "step_000003"]


@pytest.mark.parametrize("old_format", [1, 2])
def test_a_checkpoint_in_another_format_is_an_error_naming_it(tmp_path, old_format):
    """A step checkpoint of an older format (1: a file per process, no "format" in meta.json; 2: optimizer
    state by position) is neither resumed from nor skipped in favour of an older one or a fresh start."""
    folder = tmp_path / "step_000100"
    folder.mkdir()
    model, opts = make_model(0)
    torch.save(model.state_dict(), folder / "model.pt")
    state = {"optimizers": [o.state_dict() for o in opts], "loader": [(3, 0)], "rng": {}}
    torch.save(state, folder / ("rank0.pt" if old_format == 1 else "training.pt"))
    meta = {"step": 100, "world_size": 1, "history": [], **({"format": 2} if old_format == 2 else {})}
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match=rf"step_000100 is in format {old_format}, this version reads format 3"):
        checkpoints(tmp_path).load_latest(model, opts)
    assert (folder / "meta.json").is_file()


def test_a_checkpoint_of_another_model_is_an_error_naming_it(tmp_path):
    ckpts = checkpoints(tmp_path)
    model, opts = make_model(0)
    ckpts.save(7, model, opts, loader_state={}, meta={})
    torch.manual_seed(0)
    wider = GPT(GPTConfig.from_depth(1, vocab_size=64, sequence_len=8, model_dim=128))
    with pytest.raises(SystemExit, match=r"step_000007 does not fit this model"):
        ckpts.load_latest(wider, wider.setup_optimizers(0.2, 0.004, 0.02, 0.0))


def test_chat_models_in_training_are_found_but_never_in_an_unusable_folder(tmp_path):
    run = tmp_path / "sft_checkpoints" / "steps" / "abc"
    for name in ("step_000040", "step_000090.unusable-20260101-000000"):
        (run / name).mkdir(parents=True)
        (run / name / "meta.json").write_text("{}")
    assert find_model(tmp_path, "sft") == run / "step_000040"


def test_a_retry_after_an_attempt_without_progress_stops_saying_how_that_one_ended(tmp_path, caplog):
    ckpts = checkpoints(tmp_path)
    ckpts.start_attempt(0, attempt=1)
    ckpts.end_attempt(30, "stopped on SIGTERM")  # with a checkpoint at 30, resumed by the next attempt
    ckpts.start_attempt(30, attempt=2)
    ckpts.end_attempt(41, "failed with RuntimeError: CUDA out of memory")  # before its next checkpoint
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        ckpts.start_attempt(30, attempt=3)
    assert stop.value.code == 1
    assert "the previous attempt (started" in caplog.text and "at step 30" in caplog.text
    assert "made no progress: at step 41 it failed with RuntimeError: CUDA out of memory" in caplog.text
    assert len(read_attempts(tmp_path)) == 2, "a retry that stops is no attempt"

    ckpts.start_attempt(30, attempt=1)  # the command typed again, after fixing the cause: it trains
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        ckpts.start_attempt(30, attempt=2)  # that one was killed without a word
    assert "made no progress: it ended without a word: killed" in caplog.text


def test_retries_go_on_while_attempts_progress_or_complete(tmp_path):
    ckpts = checkpoints(tmp_path)
    ckpts.start_attempt(0, attempt=1)  # killed without a word, after its checkpoint at 50
    ckpts.start_attempt(50, attempt=2)
    ckpts.end_attempt(64, "stopped on SIGTERM")
    ckpts.start_attempt(64, attempt=3)
    ckpts.end_attempt(100, "completed")  # then writing the final model failed (a full disk)
    ckpts.start_attempt(64, attempt=4)  # so the retry trains again from the newest step checkpoint
    assert [a["start_step"] for a in read_attempts(tmp_path)] == [0, 50, 64, 64]
