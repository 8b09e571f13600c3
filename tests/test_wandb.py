"""wandb across attempts: a training killed and resumed logs into the same wandb run, its steps continuous."""

import os
import signal
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

from conftest import CONFIG, snakemake
from test_base_train import training_pid

WANDB = ["runtime={checkpoint_every: 10, eval_every: 20, log_every: 5, wandb_run: tiny}"]


def wandb_records(path: Path):
    """The records of a run's .wandb file: a 7-byte header, then LevelDB's log format (32 KiB blocks of
    chunks, each checksum (4), length (2, little-endian), type (1: full, 2: first, 3: middle, 4: last))."""
    raw, pos, record = path.read_bytes(), 7, b""
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        if kind == 0:
            break
        record += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            parsed = wandb_internal_pb2.Record()
            parsed.ParseFromString(record)
            yield parsed
            record = b""


def logged_steps(run_dir: Path) -> tuple[str, list[int]]:
    """(run id, steps of the history records) of one offline run directory."""
    run_id, steps = None, []
    for record in wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            steps.append(record.history.step.num)
    return run_id, steps


def test_a_killed_and_resumed_training_continues_its_wandb_run(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = snakemake(tmp_path, "base_train", *CONFIG, *WANDB, env=env, wait=False)
    steps_dir = tmp_path / ".nanochat/base_checkpoints/steps"
    deadline = time.time() + 300
    while not list(steps_dir.glob("*/step_000020/meta.json")):
        assert proc.poll() is None and time.time() < deadline, "no step checkpoint appeared"
        time.sleep(0.2)
    os.kill(training_pid(tmp_path), signal.SIGKILL)
    assert proc.wait(timeout=300) == 0  # the rule's `retries` restarted it, and it resumed

    [run_folder] = steps_dir.iterdir()
    assert "resuming from" in (run_folder / "train.log").read_text()
    run_id = (run_folder / "wandb_id").read_text().strip()
    attempts = sorted((run_folder / "wandb").glob("offline-run-*"))  # one directory per process, as offline
    assert len(attempts) == 2 and all(d.name.endswith(f"-{run_id}") for d in attempts)
    # The killed attempt's wandb process may not have written its records; the resumed one logs the history
    # it restored from the step checkpoint, then its own steps: every step once, in order.
    (_, first), (second_id, second) = map(logged_steps, attempts)
    assert second_id == run_id and second == list(range(1, 41)) and set(first) <= set(second)
    assert not list(tmp_path.glob("wandb")), "wandb wrote outside the run's folder"
