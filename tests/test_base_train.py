"""Base pretraining through the real workflow: exact resume after SIGKILL, DDP equivalence, learning."""

import dataclasses
import hashlib
import http.server
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONFIG, jobs_run, record, snakemake
from nanochat import fetch, layout
from nanochat.catalog import CATALOG, CORE_TASKS
from nanochat.checkpoint import read_attempts
from nanochat.dataset import iter_texts
from nanochat.retry_guard import NO_RETRY
from nanochat.tokenizer import Tokenizer


def training_pid(workdir: Path | None, module: str = "nanochat.scripts.base_train",
                 rank: int | None = None) -> int | None:
    """The pid of the Python process running `-m module` in `workdir` (any folder: None), or of its
    torchrun worker with this RANK: never the shell that started it, whose death would orphan the trainer."""
    for proc in Path("/proc").iterdir():
        try:
            if f"-m\0{module}\0".encode() in (proc / "cmdline").read_bytes() \
                    and (workdir is None or os.readlink(proc / "cwd") == str(workdir)) \
                    and (rank is None or f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0")):
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None


def weights(workdir: Path) -> dict:
    return torch.load(workdir / ".nanochat/base_checkpoints/model.pt")


def test_a_local_run_shows_training_progress_live_and_logs_it(tmp_path):
    """The terminal of `snakemake --profile profiles/local` (its stdout) shows each progress line of
    training as it is written (step, loss, tok/s, ETA); the rule's log file has every one of them too."""
    run = snakemake(tmp_path, "base_train", "--config", "tok_train={vocab_size: 512}",
                    "base_train={num_iterations: 10}", "runtime={log_every: 5, eval_every: 0}")
    shown = re.findall(r"^\d\d:\d\d:\d\d base_train: (step +\d+/10 \| loss .* tok/s .* eta \S+)$", run.stdout,
                       flags=re.M)
    assert [line.split(" | ")[0] for line in shown] == ["step  5/10", "step 10/10"], run.stdout
    log = (tmp_path / ".nanochat/logs/base_train/base_train.log").read_text()
    assert all(line in log for line in shown)
    assert "checkpoint saved" in run.stdout  # resumable state is news too; other lines stay in the log


def test_sigkilled_training_resumes_bit_identically(straight_run, tmp_path):
    proc = snakemake(tmp_path, "base_train", *CONFIG, wait=False)
    deadline = time.time() + 300
    while not list((tmp_path / ".nanochat/base_checkpoints/steps").glob("*/step_000020/meta.json")):
        assert proc.poll() is None and time.time() < deadline, "no step checkpoint appeared"
        time.sleep(0.2)
    pid = training_pid(tmp_path)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0  # the rule's `retries` restarted it
    log = (tmp_path / ".nanochat/logs/base_train/base_train.log").read_text()
    assert "resuming from" in log

    resumed, straight = weights(tmp_path), weights(straight_run)
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight), "weights differ from the straight run"
    losses = [h["loss"] for h in record(tmp_path, "base_train.json")["history"]]
    assert losses == [h["loss"] for h in record(straight_run, "base_train.json")["history"]]
    assert len(losses) == 40


def test_a_second_trainer_of_a_running_run_stops_at_once_naming_the_first(tiny_run, tmp_path):
    """The Snakemake that started a training dies (kill -9); its trainer goes on. After --unlock, the same
    command must not start a second trainer on the same step folder, nor job after job that each refuse: it
    stops at once, naming the first."""
    shutil.copytree(tiny_run / ".nanochat", tmp_path / ".nanochat")
    endless = [*CONFIG, "base_train={num_iterations: 100000}", "workflow={training_retries: 0}"]
    controller = snakemake(tmp_path, "base_train", *endless, wait=False)
    steps = tmp_path / ".nanochat/base_checkpoints/steps"
    deadline = time.time() + 300
    while not list(steps.glob("*/step_000010/meta.json")):
        assert controller.poll() is None and time.time() < deadline, "no step checkpoint appeared"
        time.sleep(0.2)
    first = training_pid(tmp_path)
    os.kill(controller.pid, signal.SIGKILL)
    controller.wait()
    try:
        snakemake(tmp_path, "--unlock", "base_train", *endless)
        # with the default 20 retries: not one job is started, let alone a retry of one (issue 25, row 13)
        second = snakemake(tmp_path, "base_train", *endless[:-1], check=False)
        assert second.returncode != 0
        assert f"base_train was not started: it is still being trained by pid {first} on" in second.stderr
        assert f"kill {first}" in second.stderr and "Trying to restart" not in second.stderr
        assert training_pid(tmp_path) == first, "the first trainer was disturbed"
        [run] = steps.iterdir()
        assert len(read_attempts(run)) == 1, "a second trainer started"
        assert (run / "trainer.lock").is_file() and list(run.glob("step_*/meta.json"))  # nothing deleted
    finally:
        os.kill(first, signal.SIGTERM)  # it checkpoints and exits 75, releasing the lock
    deadline = time.time() + 120
    while training_pid(tmp_path) == first:
        assert time.time() < deadline, "the first trainer did not stop on SIGTERM"
        time.sleep(0.2)
    assert not (run / "trainer.lock").exists()


def test_runtime_settings_never_retrain(straight_run):
    changed = CONFIG[:-1] + ["runtime={checkpoint_every: 7, eval_every: 3, log_every: 1, wandb_run: x}"]
    result = snakemake(straight_run, "-n", "base_loss", *changed)
    assert "Nothing to be done" in result.stdout + result.stderr
    result = snakemake(straight_run, "-n", "base_loss", *CONFIG[:-1], "base_train={num_iterations: 41}")
    assert "base_train" in jobs_run(result)


def unigram_bpb(train_shards: list[Path], val_shard: Path, tokenizer: Tokenizer) -> float:
    """Bits per byte of the validation text under the training text's unigram token distribution."""
    counts = Counter(t for text in iter_texts(train_shards) for t in tokenizer.encode(text, prepend_bos=True))
    total = sum(counts.values())
    nats, nbytes = 0.0, 0
    for text in iter_texts([val_shard]):
        for t in tokenizer.encode(text):
            nats -= math.log((counts[t] + 1) / (total + tokenizer.vocab_size))
        nbytes += len(text.encode("utf-8"))
    return nats / (math.log(2) * nbytes)


def test_tiny_model_learns_well_below_the_unigram_baseline(straight_run):
    data = straight_run / ".nanochat/base_data/offline"
    shards = sorted(data.glob("shard_*.parquet"))
    tokenizer = Tokenizer.load(straight_run / ".nanochat/tokenizer/tokenizer.json")
    baseline = unigram_bpb(shards[:-1], shards[-1], tokenizer)
    result = record(straight_run, "base_loss.json")
    assert result["val_bpb"] < 0.8 * baseline, f"val {result['val_bpb']:.3f} bpb vs unigram {baseline:.3f}"
    assert len(result["samples"]) == 7 and all(s["completion"] for s in result["samples"])


def test_two_process_ddp_matches_one_process(tiny_run, tmp_path):
    base = tiny_run / ".nanochat"
    shards = sorted(str(p) for p in (base / "base_data/offline").glob("shard_*.parquet"))
    args = ["--depth=2", "--max_seq_len=64", "--device_batch_size=2", "--total_batch_size=512",
            "--num_iterations=6", "--eval_every=0", "--checkpoint_every=0", "--eval_tokens=2048",
            f"--tokenizer={base}/tokenizer/tokenizer.json", f"--val={shards[-1]}", *shards[:-1]]
    histories = []
    for name, launcher in (("one", []), ("two", ["torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        out = tmp_path / name
        cmd = [sys.executable, "-m", *launcher, *(["-m"] if launcher else []), "nanochat.scripts.base_train", *args,
               f"--out_dir={out}", f"--ckpt_dir={out}/steps"]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        histories.append(json.loads((out / "base_train.json").read_text()))
    one, two = histories
    assert two["world_size"] == 2
    for a, b in zip(one["history"], two["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert one["val_bpb"] == pytest.approx(two["val_bpb"], rel=1e-3)


def test_sigusr1_to_one_ddp_process_checkpoints_every_rank_and_the_rerun_resumes(tiny_run, tmp_path):
    """The stop request is agreed by all processes at the same step, so a warning signal that reaches one
    rank still gives one complete checkpoint (not a hang in the next all-reduce), exit 75 and a resume."""
    base = tiny_run / ".nanochat"
    shards = sorted(str(p) for p in (base / "base_data/offline").glob("shard_*.parquet"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "nanochat.scripts.base_train", "--depth=2", "--max_seq_len=64", "--device_batch_size=2",
           "--total_batch_size=256", "--num_iterations=400", "--eval_every=0", "--checkpoint_every=0",
           "--eval_tokens=2048", "--log_every=1", f"--tokenizer={base}/tokenizer/tokenizer.json",
           f"--val={shards[-1]}", f"--out_dir={tmp_path}", f"--ckpt_dir={tmp_path}/steps", *shards[:-1]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any("step  10/400" in log.read_text() for log in tmp_path.glob("steps/*/train.log")):
        assert proc.poll() is None and time.time() < deadline, "training did not reach step 10"
        time.sleep(0.1)
    os.kill(training_pid(None, rank=1), signal.SIGUSR1)
    assert proc.wait(timeout=120) != 0
    [log] = tmp_path.glob("steps/*/train.log")  # rank 0's, which did not get the signal
    stopped = int(re.search(r"stopped at step (\d+) on another process's stop request", log.read_text()).group(1))
    assert 10 <= stopped < 400
    folder = log.parent / f"step_{stopped:06d}"
    assert {p.name for p in folder.iterdir()} == {"model.pt", "training.pt", "meta.json"}

    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert f"resuming from {folder}" in log.read_text()  # the same file keeps both attempts
    assert len(json.loads((tmp_path / "base_train.json").read_text())["history"]) == 400


def tiny_train(tiny_run: Path, out: Path, *flags: str, processes: int = 1) -> list[str]:
    """The command of a small base_train on the tiny run's data, on `processes` (gloo), step checkpoints in
    `out`/steps: 4 micro-batches per step, so 2 for each of two processes."""
    base = tiny_run / ".nanochat"
    shards = sorted(str(p) for p in (base / "base_data/offline").glob("shard_*.parquet"))
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] * (processes > 1)
    return [sys.executable, *launcher, "-m", "nanochat.scripts.base_train", "--depth=2", "--max_seq_len=64",
            "--device_batch_size=2", "--total_batch_size=512", "--eval_every=0", "--eval_tokens=2048",
            f"--tokenizer={base}/tokenizer/tokenizer.json", f"--val={shards[-1]}", f"--out_dir={out}",
            f"--ckpt_dir={out}/steps", *flags, *shards[:-1]]


def optimizer_megabytes(out: Path) -> list[float]:
    """The optimizer state of each process, as the run logged it after its first step."""
    [log] = out.glob("steps/*/train.log")
    sizes = re.search(r"optimizer state per process: ([\d., ]+) MB", log.read_text()).group(1)
    return [float(x) for x in sizes.split(",")]


def test_a_sharded_optimizer_on_2_and_4_processes_gives_the_losses_of_one_process(tiny_run, tmp_path):
    """Each process keeps the optimizer state of its share of the parameters (nanochat.sharding): the same
    losses as one process (and as DDP) over 10 steps, with the state split between the processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs, states = {}, {}
    for name, processes, sharded in (("one", 1, True), ("ddp", 2, False), ("two", 2, True), ("four", 4, True)):
        flags = ["--num_iterations=10", "--checkpoint_every=0", f"--shard_optimizer={sharded}"]
        subprocess.run(tiny_train(tiny_run, tmp_path / name, *flags, processes=processes), check=True,
                       capture_output=True, env=env)
        runs[name] = json.loads((tmp_path / name / "base_train.json").read_text())
        states[name] = optimizer_megabytes(tmp_path / name)
    for name in ("ddp", "two", "four"):
        for a, b in zip(runs["one"]["history"], runs[name]["history"], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (name, a["step"])
        assert runs[name]["val_bpb"] == pytest.approx(runs["one"]["val_bpb"], rel=1e-4)
    [whole] = states["one"]
    assert states["ddp"] == [whole, whole]  # DDP: every process the whole state
    for name, processes in (("two", 2), ("four", 4)):
        assert sum(states[name]) == pytest.approx(whole, abs=0.01) and max(states[name]) < whole / processes * 1.6
    print({name: mb for name, mb in states.items()})


def test_a_checkpoint_of_two_processes_resumes_on_one_at_its_step_with_the_same_data(tiny_run, tmp_path):
    """Two processes (gloo) train 8 steps, with a step checkpoint at 4; one process resumes from it and trains
    steps 5 to 8 on the same data: the same losses and model as the two processes', up to the order of the
    sums (test_two_process_ddp_matches_one_process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    flags = ["--num_iterations=8", "--checkpoint_every=4"]
    subprocess.run(tiny_train(tiny_run, tmp_path, *flags, processes=2), check=True, capture_output=True, env=env)
    two = json.loads((tmp_path / "base_train.json").read_text())
    two_weights = torch.load(tmp_path / "model.pt")
    [log] = tmp_path.glob("steps/*/train.log")
    checkpoint = log.parent / "step_000004"
    assert json.loads((checkpoint / "meta.json").read_text())["world_size"] == 2

    for name in ("model.pt", "meta.json", "base_train.json"):  # the outputs of a run that was stopped there
        (tmp_path / name).unlink()
    shutil.rmtree(log.parent / "step_000008")  # and the checkpoint of its last step
    subprocess.run(tiny_train(tiny_run, tmp_path, *flags), check=True, capture_output=True, env=env)
    text = log.read_text()
    assert f"resuming from {checkpoint} (step 4)" in text
    assert "step_000004 was written by 2 processes; continuing on 1" in text
    one = json.loads((tmp_path / "base_train.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert one["history"][:4] == two["history"][:4]  # from the checkpoint
    for a, b in zip(one["history"][4:], two["history"][4:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert one["val_bpb"] == pytest.approx(two["val_bpb"], rel=1e-3)
    # The weights as a whole: Muon amplifies the order-of-sums differences in the small, zero-initialised
    # projections (5% apart after 8 steps on one and on two processes here), and on a CPU with AMX its bf16
    # Newton-Schulz rounds differently for the stacks of matrices each process orthogonalizes (its share of
    # them). Measured, relative: 1.2e-3 from the model of the two processes (1.2e-4 when Muon took one matrix
    # at a time); 0.25 when two of the four streams resume from their start instead.
    one_weights = torch.load(tmp_path / "model.pt")
    difference = torch.cat([(one_weights[k] - w).flatten() for k, w in two_weights.items()])
    assert difference.norm() < 1e-2 * torch.cat([w.flatten() for w in two_weights.values()]).norm()


def test_a_run_killed_after_its_last_step_resumes_with_no_step_to_redo(tiny_run, tmp_path):
    """SLURM's time limit can come after the last step, during the final evaluation or save: the job is then
    TIMEOUT and its outputs are removed. The last step has its checkpoint, so the retry trains nothing and
    writes the same model."""
    cmd = tiny_train(tiny_run, tmp_path, "--num_iterations=7", "--checkpoint_every=4")
    subprocess.run(cmd, check=True, capture_output=True)
    first, first_weights = json.loads((tmp_path / "base_train.json").read_text()), torch.load(tmp_path / "model.pt")
    for name in ("model.pt", "meta.json", "base_train.json"):  # what Snakemake removes of a failed job
        (tmp_path / name).unlink()
    subprocess.run(cmd, check=True, capture_output=True)
    [log] = tmp_path.glob("steps/*/train.log")
    assert f"resuming from {log.parent / 'step_000007'} (step 7)" in log.read_text()
    assert [(a["start_step"], a["end_step"], a["outcome"]) for a in read_attempts(log.parent)] == [
        (0, 7, "completed"), (7, 7, "completed")]
    assert json.loads((tmp_path / "base_train.json").read_text())["val_bpb"] == first["val_bpb"]
    assert all(torch.equal(w, first_weights[k]) for k, w in torch.load(tmp_path / "model.pt").items())


def test_a_retry_after_an_attempt_without_progress_stops_at_once_saying_why(tiny_run, tmp_path):
    """An attempt killed before its first step checkpoint made no progress: a retry (Snakemake's --attempt=2)
    would only repeat it, so it stops before training, saying how that attempt ended."""
    cmd = tiny_train(tiny_run, tmp_path, "--num_iterations=100000", "--checkpoint_every=0")
    killed = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob("steps/*/attempts.json")):
        assert killed.poll() is None and time.time() < deadline, "the attempt did not start"
        time.sleep(0.1)
    killed.kill()
    killed.wait()
    retry = subprocess.run([*cmd, "--attempt=2"], capture_output=True, text=True, timeout=300)
    assert retry.returncode == 1
    assert "not training: the previous attempt (started" in retry.stderr
    assert "at step 0 on" in retry.stderr and "made no progress: it ended without a word: killed" in retry.stderr
    assert "| loss" not in retry.stderr
    [run] = [folder for folder in tmp_path.glob("steps/*") if folder.is_dir()]
    assert [a["outcome"] for a in read_attempts(run)] == [None]
    assert json.loads((tmp_path / "steps" / NO_RETRY).read_text())["attempt"] == 2  # so no retry follows it


def test_one_command_retries_a_run_as_long_as_each_attempt_advances(straight_run, tmp_path):
    """Every attempt is stopped (SIGUSR1, exit 75) once it has trained a step, five times: the rule's retries
    go on, in one command, and the run ends as the straight run does."""
    proc = snakemake(tmp_path, "base_train", *CONFIG[:-1], "runtime={checkpoint_every: 10, log_every: 1}",
                     wait=False)
    steps = tmp_path / ".nanochat/base_checkpoints/steps"

    def attempts() -> list[dict]:
        return [attempt for run in steps.glob("*") for attempt in read_attempts(run)]

    def trained() -> int:
        return max((int(step) for log in steps.glob("*/train.log")
                    for step in re.findall(r"step\s+(\d+)/40 \|", log.read_text())), default=0)

    def training(n: int) -> bool:
        runs = attempts()
        return len(runs) == n and runs[-1]["outcome"] is None and trained() > runs[-1]["start_step"]

    def ended(n: int) -> bool:
        return attempts()[n - 1]["outcome"] is not None

    def wait_until(state, n: int) -> None:
        deadline = time.time() + 300
        while not state(n):
            assert proc.poll() is None and time.time() < deadline, f"attempt {n} never {state.__name__}"
            time.sleep(0.05)

    for n in range(1, 6):
        wait_until(training, n)
        os.kill(training_pid(tmp_path), signal.SIGUSR1)
        wait_until(ended, n)
    assert proc.wait(timeout=300) == 0
    assert (tmp_path / "snakemake.out").read_text().count("Trying to restart") == 5

    runs = attempts()
    assert [a["attempt"] for a in runs] == [1, 2, 3, 4, 5, 6]
    assert [a["outcome"] for a in runs] == ["stopped on SIGUSR1"] * 5 + ["completed"]
    for attempt, following in zip(runs, runs[1:]):
        assert following["start_step"] == attempt["end_step"] > attempt["start_step"]
    assert runs[0]["start_step"] == 0 and runs[-1]["end_step"] == 40
    losses = [h["loss"] for h in record(tmp_path, "base_train.json")["history"]]
    assert losses == [h["loss"] for h in record(straight_run, "base_train.json")["history"]]


def test_core_without_a_bundle_says_not_available(straight_run):
    snakemake(straight_run, "base_eval", *CONFIG)
    result = record(straight_run, "base_eval.json")
    assert result["available"] is False and result["core"] is None and "not available offline" in result["reason"]


def mini_bundle(path: Path) -> bytes:
    """A bundle of the pinned bundle's 22 tasks with three items each, in its layout, zipped under a top
    folder as upstream's is: multiple-choice and language-modeling tasks by turns."""
    mc = [{"query": f"And God said, Let there be {w}:", "choices": ["and there was light.", "the cat sat"],
           "gold": 0} for w in ("light", "a firmament", "lights")]
    lm = [{"context": "In the beginning God created", "continuation": " the heaven and the earth."}] * 3
    tasks, baselines = [], ["Eval Task,Random baseline"]
    with zipfile.ZipFile(path, "w") as zf:
        for i, label in enumerate(CORE_TASKS):
            items, kind = (mc, "multiple_choice") if i % 2 == 0 else (lm, "language_modeling")
            tasks.append({"label": label, "dataset_uri": f"{label}.jsonl", "num_fewshot": [i % 3],
                          "icl_task_type": kind, "continuation_delimiter": " " if i % 2 == 0 else ""})
            baselines.append(f"{label},{50 if i % 2 == 0 else 0}")
            zf.writestr(f"eval_bundle/eval_data/{label}.jsonl", "".join(json.dumps(x) + "\n" for x in items))
        zf.writestr("eval_bundle/core.yaml", yaml.safe_dump({"icl_tasks": tasks}))
        zf.writestr("eval_bundle/eval_meta_data.csv", "\n".join(baselines) + "\n")
    return path.read_bytes()


def test_core_downloads_a_verified_bundle_and_scores_every_task(straight_run, tmp_path):
    good = mini_bundle(tmp_path / "eval_bundle.zip")
    served = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the first answer is corrupt (a CRC error), later ones are good
            body = good if served else good[:100] + bytes(200) + good[300:]
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/eval_bundle.zip"
    bundle = straight_run / ".nanochat" / layout.download_path("eval_bundle")
    # The catalog pins the real bundle's sha256; this one is checked the same way against its own.
    entry = dataclasses.replace(CATALOG["eval_bundle"], url=url, sha256=hashlib.sha256(good).hexdigest())
    try:
        with pytest.raises(SystemExit, match="failed verification 3 times: sha256"):
            fetch.url_file(dataclasses.replace(entry, sha256="0" * 64), bundle)
        assert not bundle.exists()
        served.clear()
        fetch.url_file(entry, bundle)
    finally:
        server.shutdown()
    assert len(served) == 2, "the corrupt bundle was not downloaded again"
    assert (bundle / "core.yaml").is_file()
    run = snakemake(straight_run, "base_eval", *CONFIG, "base_eval={bundle: true, max_per_task: 3}")
    assert jobs_run(run) == {"base_eval_task": 22, "base_eval": 1}  # one job per task, then CORE
    result = record(straight_run, "base_eval.json")
    assert result["available"] and set(result["tasks"]) == set(CORE_TASKS)
    for task in result["tasks"].values():
        assert task["n"] == 3 and task["centered"] == pytest.approx(
            (task["accuracy"] - task["baseline"]) / (1 - task["baseline"]))
    assert result["core"] == pytest.approx(sum(t["centered"] for t in result["tasks"].values()) / 22)
    assert {t["task_type"] for t in result["tasks"].values()} == {"multiple_choice", "language_modeling"}
