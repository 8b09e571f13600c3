"""Midtraining and SFT through real Snakemake targets: learning, stale-only reruns, resume after SIGKILL."""

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import CONFIG, jobs_run, record, snakemake
from test_base_train import training_pid

CHAT = CONFIG + ["mid_train={num_iterations: 20}", "chat_sft={num_iterations: 20}",
                 "runtime={checkpoint_every: 5, eval_every: 5, log_every: 5, eval_tokens: 8192}",
                 "chat_eval={source: offline, max_problems: 4, max_new_tokens: 8}"]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("chat")
    snakemake(workdir, "report", *CHAT, timeout=900)
    return workdir


@pytest.mark.parametrize("stage", ["mid", "sft"])
def test_each_chat_stage_learns_its_own_distribution(chat_run, stage):
    result = record(chat_run, f"{stage}_train.json")
    assert result["num_steps"] == 20 and len(result["history"]) == 20
    assert result["val_loss"] < result["initial_val_loss"], result
    assert result["mixture"]["chatterbot"] == 2026 and result["mixture"]["spelling"] > 0
    assert record(chat_run, f"chat_eval_{stage}.json")["tasks"]["MMLU"]["n"] == 4


def test_changing_an_sft_setting_reruns_only_sft_its_eval_and_the_report(chat_run):
    result = snakemake(chat_run, "-n", "report", *CHAT, "chat_sft={init_lr_frac: 0.05}")
    assert jobs_run(result) == {"chat_sft": 1, "chat_eval": 1, "report": 1}


def test_sigkilled_sft_resumes_instead_of_restarting(chat_run):
    changed = CHAT + ["chat_sft={num_iterations: 20, init_lr_frac: 0.03}"]
    steps = chat_run / ".nanochat/sft_checkpoints/steps"
    earlier_runs = set(steps.iterdir())  # the changed settings give a new run folder
    proc = snakemake(chat_run, ".nanochat/sft_checkpoints/model.pt", *changed, wait=False)
    deadline = time.time() + 300
    while not [d for d in steps.iterdir() if d not in earlier_runs and (d / "step_000010/meta.json").exists()]:
        assert proc.poll() is None and time.time() < deadline, "no SFT step checkpoint appeared"
        time.sleep(0.2)
    pid = training_pid(chat_run, "nanochat.chat_sft")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0  # the rule's `retries` restarted it
    log = (chat_run / ".nanochat/logs/chat_sft/chat_sft.log").read_text()
    assert "resuming from" in log
    history = record(chat_run, "sft_train.json")["history"]
    assert [h["step"] for h in history] == list(range(1, 21))
