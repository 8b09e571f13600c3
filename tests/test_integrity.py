"""Damaged and lost artefacts (nanochat.integrity), load errors that name the file, and the retry guard
(nanochat.retry_guard), without Snakemake; tests/test_faults.py runs the same through the workflow."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nanochat.checkpoint import load_model, save_final
from nanochat.common import sha256sum, write_json_atomic
from nanochat.dataloader import DataLoader
from nanochat.dataset import iter_texts, write_shard
from nanochat.gpt import GPT, GPTConfig
from nanochat.integrity import lost, problem, set_aside_damaged, set_aside_stale_report
from nanochat.retry_guard import NO_RETRY, RESUMABLE_EXIT, no_retry_on_exit, refusal
from nanochat.tokenizer import Tokenizer


@pytest.fixture
def tokenizer(tmp_path):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    Tokenizer.train(["the quick brown fox jumps over the lazy dog"] * 20, 300).save(folder / "tokenizer.json")
    write_json_atomic(folder / "tok_train.json", {"tokenizer_sha256": sha256sum(folder / "tokenizer.json")})
    return folder / "tokenizer.json"


def flip_bytes(path, offsets=(100, 200, 300)):
    data = bytearray(path.read_bytes())
    for i in offsets:
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def tiny_model_folder(folder):
    model = GPT(GPTConfig.from_depth(1, vocab_size=64, sequence_len=8))
    model.init_weights()
    save_final(folder, model, {"model_config": model.export_config()})
    return folder / "model.pt"


def test_intact_artefacts_pass_and_damaged_ones_are_named(tmp_path, tokenizer):
    shard, model = tmp_path / "shard_00000.parquet", tiny_model_folder(tmp_path / "base")
    write_shard(["a document"] * 50, shard)
    assert [problem(p) for p in (shard, model, tokenizer)] == [None, None, None]
    for path in (shard, model):
        cut_in_half(path)
    flip_bytes(tokenizer)
    assert "truncated" in problem(shard) or "magic" in problem(shard)
    assert "not a complete torch file" in problem(model)
    assert "sha256" in problem(tokenizer) and "tok_train wrote" in problem(tokenizer)


def test_a_tokenizer_without_its_record_is_checked_as_json(tmp_path, tokenizer):
    (tokenizer.parent / "tok_train.json").unlink()
    assert problem(tokenizer) is None
    flip_bytes(tokenizer, offsets=(10,))
    assert "not valid UTF-8 JSON" in problem(tokenizer)


def test_damaged_files_are_moved_aside_never_deleted(tmp_path):
    shard, missing = tmp_path / "shard_00000.parquet", tmp_path / "shard_00001.parquet"
    write_shard(["a document"] * 50, shard)
    cut_in_half(shard)
    damaged = shard.read_bytes()
    [message] = set_aside_damaged([shard, missing])
    [aside] = tmp_path.glob("shard_00000.parquet.damaged-*")
    assert not shard.exists() and aside.read_bytes() == damaged
    assert str(shard) in message and str(aside) in message
    assert set_aside_damaged([shard, missing]) == []


def test_a_report_of_what_is_gone_is_moved_aside(tmp_path):
    report, model = tmp_path / "report.md", str(tmp_path / "base" / "model.pt")
    assert set_aside_stale_report(report, [model]) is None  # no report yet: nothing was built
    report.write_text("# report")
    assert set_aside_stale_report(report, []) is None and report.exists()
    message = set_aside_stale_report(report, [model])
    assert model in message and not report.exists()
    assert [p.read_text() for p in tmp_path.glob("report.md.stale-*")] == ["# report"]


def test_only_what_its_stage_finished_is_lost(tmp_path, tokenizer):
    model, never_trained = tiny_model_folder(tmp_path / "base"), tmp_path / "rl" / "model.pt"
    token_bytes = tokenizer.parent / "token_bytes.pt"
    torch.save(torch.zeros(3), token_bytes)
    assert lost([model, never_trained, tokenizer, token_bytes]) == []
    model.unlink()
    token_bytes.unlink()
    assert lost([model, never_trained, tokenizer, token_bytes]) == [str(model), str(token_bytes)]


def test_load_errors_name_the_file(tmp_path, tokenizer):
    """Every stage loads through these: a damaged file stops it naming the file, as an InputError (SystemExit)."""
    flip_bytes(tokenizer)
    with pytest.raises(SystemExit, match=f"{tokenizer} does not load"):
        Tokenizer.load(tokenizer)
    model = tiny_model_folder(tmp_path / "base")
    cut_in_half(model)
    with pytest.raises(SystemExit, match=f"{model} does not load"):
        load_model(model.parent)
    shard = tmp_path / "shard_00000.parquet"
    write_shard(["a document"] * 50, shard)
    cut_in_half(shard)
    with pytest.raises(SystemExit, match=f"{shard} does not load"):
        list(iter_texts([shard]))
    (tmp_path / "tok").mkdir()
    Tokenizer.train(["a document"] * 20, 300).save(tmp_path / "tok" / "tokenizer.json")
    pq.write_table(pa.table({"body": ["a document"] * 50}), shard)  # parquet, but not a corpus shard
    with pytest.raises(SystemExit, match=f"{shard} does not load"):
        DataLoader([shard], Tokenizer.load(tmp_path / "tok" / "tokenizer.json"), 1, 8, 8)


def exit_in_stage(ckpt_dir, attempt, stop):
    with no_retry_on_exit(ckpt_dir, attempt):
        raise stop


@pytest.mark.parametrize("stop, recorded", [
    (SystemExit("error: base.parquet does not load"), "error: base.parquet does not load"),
    (SystemExit(1), "exit status 1: its log says why"),
    (SystemExit(RESUMABLE_EXIT), None),  # stopped for the time limit: the retry resumes
    (RuntimeError("CUDA error: an illegal memory access"), None),  # a crash: a retry may get past it
])
def test_only_an_error_no_retry_can_fix_stops_the_retries(tmp_path, stop, recorded):
    with pytest.raises(type(stop)):
        exit_in_stage(tmp_path, 1, stop)
    why = refusal("base_train", tmp_path, 2, "base_train.log")
    if recorded is None:
        assert why is None and not (tmp_path / NO_RETRY).exists()
    else:
        assert recorded in why and "base_train.log" in why and "not retried" in why
        assert refusal("base_train", tmp_path, 1, "log") is None  # a command typed again always starts
        assert refusal("base_train", tmp_path, 3, "log") is None  # the record is of attempt 1, not 2


def test_an_attempt_clears_the_record_of_the_one_before(tmp_path):
    with pytest.raises(SystemExit):
        exit_in_stage(tmp_path, 1, SystemExit("error: bad"))
    with no_retry_on_exit(tmp_path, 1):  # the command typed again, after the fix
        pass
    assert not (tmp_path / NO_RETRY).exists() and refusal("base_train", tmp_path, 2, "log") is None


def test_an_unreadable_record_never_stops_a_retry(tmp_path):
    for text in ("{", "[]", '{"error": "no attempt"}'):  # cut short, or not written by no_retry_on_exit
        (tmp_path / NO_RETRY).write_text(text)
        assert refusal("base_train", tmp_path, 2, "log") is None
    (tmp_path / NO_RETRY).write_text('{"attempt": 1}')  # an error message that was lost: still no retry
    assert "not retried" in refusal("base_train", tmp_path, 2, "log")


def test_a_live_trainer_of_an_earlier_command_refuses_every_attempt(tmp_path):
    run = tmp_path / "0123abcd"
    run.mkdir()
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (run / "trainer.lock").write_text(json.dumps({"slurm_job": None, "host": os.uname().nodename,
                                                      "pid": trainer.pid}))
        why = refusal("base_train", tmp_path, 1, "log")
        assert f"pid {trainer.pid}" in why and f"kill {trainer.pid}" in why and "was not started" in why
    finally:
        trainer.kill()
        trainer.wait()
    assert refusal("base_train", tmp_path, 1, "log") is None  # its holder is gone: the lock is stale


