"""The `nanochat` command (nanochat/cli.py), as installed by pip, on the tiny pipeline's models."""

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

from conftest import REPO, record

NANOCHAT = str(Path(sys.executable).parent / "nanochat")  # the console script beside this Python
COMMANDS = ("chat", "serve", "export", "eval", "plan")


def nanochat(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NANOCHAT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_help_lists_every_command_and_each_has_its_own_help(tmp_path):
    listing = nanochat("--help", cwd=tmp_path)
    assert listing.returncode == 0 and all(f"    {name} " in listing.stdout for name in COMMANDS), listing.stdout
    for name in COMMANDS:
        result = nanochat(name, "--help", cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("usage: nanochat"), (name, result.stderr)
    assert "--temperature" in nanochat("chat", "--help", cwd=tmp_path).stdout  # chat_cli's own options
    assert "--workers" in nanochat("serve", "--help", cwd=tmp_path).stdout  # chat_web's


def test_unknown_arguments_and_commands_are_refused(tmp_path):
    for args in (("export", "--bogus"), ("train",)):
        result = nanochat(*args, cwd=tmp_path)
        assert result.returncode == 2 and "error:" in result.stderr, args


def test_chat_answers_a_prompt(chat_run):
    result = nanochat("chat", "-i", "sft", "-t", "0", "--max_tokens", "8", "-p", "Hello!", cwd=chat_run)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr


def test_eval_gives_the_stages_answers_on_the_same_problems(chat_run, tmp_path):
    """The oracle is the stage as the workflow's rule runs it, on the same model (other tests retrain the
    run's models after its own evaluation): the same problems, answers and accuracy."""
    result = nanochat("eval", "-i", "sft", "--task", "mmlu", "--max_problems", "4", "--out", str(tmp_path / "r.json"),
                      cwd=chat_run)
    assert result.returncode == 0, result.stderr
    base = chat_run / ".nanochat"
    subprocess.run([sys.executable, "-m", "nanochat.scripts.chat_eval", "--task=mmlu", "--source=offline",
                    "--max_problems=4", f"--model_dir={base / 'sft_checkpoints'}", f"--hub_dir={base / 'hub'}",
                    f"--tokenizer={base / 'tokenizer/tokenizer.json'}", f"--out={tmp_path / 'stage.json'}"],
                   check=True, capture_output=True)
    ours, stages = (json.loads((tmp_path / name).read_text()) for name in ("r.json", "stage.json"))
    assert ours["correct"] == stages["correct"] and ours["answers"] == stages["answers"]
    assert f"MMLU: accuracy {stages['accuracy']:.4f} on 4 problems" in result.stdout


def test_eval_of_a_missing_model_names_what_to_train(tmp_path):
    result = nanochat("eval", "-i", "rl", "--task", "mmlu", cwd=tmp_path)
    assert result.returncode == 1 and "no rl checkpoint under" in result.stderr


def test_export_writes_a_folder_transformers_loads(chat_run, tmp_path):
    result = nanochat("export", "-i", "mid", "--out", str(tmp_path / "mid"), cwd=chat_run)
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mid")
    assert model.config.model_type == "nanochat"
    exported_step = json.loads((tmp_path / "mid/export.json").read_text())["model_step"]
    assert exported_step == record(chat_run, "mid_train.json")["num_steps"]


def test_plan_runs_the_workflows_plan_rule(tmp_path):
    result = nanochat("plan", "--directory", str(tmp_path), "--config", "base_train={depth: 6}", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "| base_train |" in result.stdout and "Scratch:" in result.stdout


def test_plan_outside_the_checkout_says_where_to_run_it(tmp_path):
    result = nanochat("plan", cwd=tmp_path)
    assert result.returncode == 1 and "run `nanochat plan` in the checkout" in result.stderr
