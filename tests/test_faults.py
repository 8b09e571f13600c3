"""Artefacts lost or damaged after their stage wrote them, and errors no retry can fix, through real Snakemake
runs of copies of the session's tiny runs (issue 25: rows 6, 7 and 8)."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import CHAT, CONFIG, jobs_run, snakemake
from nanochat.checkpoint import read_attempts
from nanochat.common import sha256sum


def copy_run(run, workdir):
    """A run's artefacts and Snakemake's records of them, modification times kept."""
    for name in (".nanochat", ".snakemake"):
        shutil.copytree(run / name, workdir / name, symlinks=True)
    return workdir / ".nanochat"


def test_a_deleted_final_model_is_rebuilt_from_its_last_step_checkpoint(chat_run, tmp_path):
    """rm base_checkpoints/model.pt after a complete run: `report` used to say "Nothing to be done". Now
    base_train rebuilds it from its last step checkpoint, bit for bit, without a step of training, and what was
    made from it is made again (the later stages resume at their last steps)."""
    base = copy_run(chat_run, tmp_path)
    model = base / "base_checkpoints" / "model.pt"
    digest = sha256sum(model)
    model.unlink()
    result = snakemake(tmp_path, "report", *CHAT)
    assert ".nanochat/base_checkpoints/model.pt gone since .nanochat/report/report.md was written" in result.stderr
    assert jobs_run(result)["base_train"] == 1 and sha256sum(model) == digest
    [run] = (base / "base_checkpoints" / "steps").iterdir()
    assert read_attempts(run)[-1]["start_step"] == 40  # the last step: nothing retrained
    assert jobs_run(result)["report"] == 1
    assert jobs_run(snakemake(tmp_path, "report", *CHAT)) == {}


def test_a_tokenizer_with_flipped_bytes_is_set_aside_and_rebuilt(chat_run, tmp_path):
    """3 flipped bytes in tokenizer.json: base_train used to fail on "stream did not contain valid UTF-8", naming
    no file, 21 times. Now the run sees it against tok_train's record before any job and rebuilds it, and what
    was made from it: the same tokenizer, so every training stage resumes at its last step."""
    base = copy_run(chat_run, tmp_path)
    tokenizer = base / "tokenizer" / "tokenizer.json"
    digest = sha256sum(tokenizer)
    data = bytearray(tokenizer.read_bytes())
    for i in (1000, 2000, 3000):
        data[i] ^= 0xFF
    tokenizer.write_bytes(bytes(data))
    result = snakemake(tmp_path, "report", *CHAT)
    assert ".nanochat/tokenizer/tokenizer.json is damaged: sha256" in result.stderr
    assert jobs_run(result)["tok_train"] == 1 and sha256sum(tokenizer) == digest
    assert list(tokenizer.parent.glob("tokenizer.json.damaged-*"))
    [run] = (base / "base_checkpoints" / "steps").iterdir()
    assert read_attempts(run)[-1]["start_step"] == 40


def test_a_truncated_shard_is_set_aside_and_rebuilt(tiny_run, tmp_path):
    """A shard cut to half its size, then a tokenizer of another size asked for: tok_train used to fail on
    "Parquet magic bytes not found", naming no file, and the shard was never rebuilt."""
    base = copy_run(tiny_run, tmp_path)
    shard = base / "base_data" / "offline" / "shard_00000.parquet"
    whole = shard.read_bytes()
    shard.write_bytes(whole[:len(whole) // 2])
    result = snakemake(tmp_path, "tok_eval", "--config", "tok_train={vocab_size: 520}")
    assert ".nanochat/base_data/offline/shard_00000.parquet is damaged: no parquet magic bytes" in result.stderr
    assert jobs_run(result) == {"base_data": 1, "tok_train": 1, "tok_eval": 1} and shard.read_bytes() == whole


def test_an_input_that_does_not_load_stops_training_without_a_retry(tiny_run, tmp_path):
    """The validation shard is parquet but has no `text` column: base_train stops naming it, and with 3
    retries allowed none is made, since a retry could only fail the same way."""
    base = copy_run(tiny_run, tmp_path)
    val = base / "base_data" / "offline" / "shard_00003.parquet"
    pq.write_table(pa.table({"body": ["a document"] * 64}), val)
    result = snakemake(tmp_path, "base_train", *CONFIG, "workflow={training_retries: 3}", check=False)
    assert result.returncode != 0
    assert "base_train is not retried: its attempt 1 stopped on an error no retry can fix" in result.stderr
    assert f"{val.relative_to(tmp_path)} does not load" in result.stderr
    log = (base / "logs" / "base_train" / "base_train.log").read_text()
    assert log.count("does not load") == 1  # one attempt
