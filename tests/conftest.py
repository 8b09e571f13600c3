import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = REPO.parent / "shared" / "anchors" / "nanochat-48abd7d"  # upstream nanochat, the oracle of some tests

# Idle OpenMP threads sleep at once in the tests, instead of the short spin the product sets (nanochat/__init__.py):
# CI shares its machine, and steadiness beside other work matters more here than speed alone (bench/
# shared_machine.py, docs/explanation/training-environments.md: 3 test files took 3.2 s beside a second training
# sleeping, 3.3 s with the short spin, 11.7 s with libgomp's default). Every Snakemake run and stage the tests
# start inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def network_settings_restored(monkeypatch):
    """A stage run inside the test process takes the process offline (nanochat.common.go_offline); the
    processes later tests start (downloads) must not inherit that."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "WANDB_MODE"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def snakemake(workdir: Path, *args: str, profile: str | Path = "local", env: dict | None = None,
              check: bool = True, timeout: float = 300, wait: bool = True):
    """Run the real workflow with a repo profile, its artefacts and metadata under `workdir`.

    With wait=False, return the running Popen (in its own process group, so a test can Ctrl-C it),
    its output going to `workdir/snakemake.out`."""
    profile_dir = profile if os.path.isabs(profile) else f"profiles/{profile}"  # a repo profile, or a folder
    cmd = [sys.executable, "-m", "snakemake", "--profile", profile_dir, "--directory", str(workdir), *args]
    full_env = {**os.environ, "HF_HUB_DISABLE_XET": "1", **(env or {})}
    if not wait:
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "snakemake.out", "w") as out:
            # SIGINT as a terminal gives it: a test runner started in the background (`cmd &`) ignores it, and
            # its children would inherit that, so a test's Ctrl-C would never reach Snakemake.
            return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    result = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def jobs_run(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule name -> job count from Snakemake's 'Job stats' table (empty when nothing ran)."""
    counts, lines = {}, (result.stdout + result.stderr).splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One real local-profile run of the tiny preset to tok_eval, shared by read-only tests."""
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "tok_eval", "--config", "tok_train={vocab_size: 512}")
    return workdir


# A short tiny-preset run: small vocabulary, 40 steps, checkpoints every 10.
CONFIG = ["--config", "tok_train={vocab_size: 512}", "base_train={num_iterations: 40}",
          "runtime={checkpoint_every: 10, eval_every: 20, log_every: 5}"]


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory) -> Path:
    """The tiny base model trained without interruption, with its base_loss record."""
    workdir = tmp_path_factory.mktemp("straight")
    snakemake(workdir, "base_loss", *CONFIG)
    return workdir


# The tiny chat stages: 20 mid and 20 SFT steps, evaluated on 4 problems per offline task.
CHAT = CONFIG + ["mid_train={num_iterations: 20}", "chat_sft={num_iterations: 20}",
                 "runtime={checkpoint_every: 5, eval_every: 5, log_every: 5, eval_tokens: 8192}",
                 "chat_eval={source: offline, max_problems: 4, max_new_tokens: 8}"]


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory) -> Path:
    """The whole tiny pipeline to `report`: base, mid and SFT models with their evaluations."""
    workdir = tmp_path_factory.mktemp("chat")
    snakemake(workdir, "report", *CHAT, timeout=900)
    return workdir


def record(workdir: Path, name: str) -> dict:
    """A stage's JSON record, found by file name under the run's base directory."""
    return json.loads(next((workdir / ".nanochat").rglob(name)).read_text())


def upstream_module(name: str, oracle: str):
    """Upstream's nanochat/<name>.py loaded under another name (both packages are called nanochat); the test
    skips, naming `oracle`, where ../shared/anchors is missing."""
    path = UPSTREAM / "nanochat" / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"upstream nanochat not found at {UPSTREAM}: the {oracle} oracle needs ../shared/anchors")
    spec = importlib.util.spec_from_file_location(f"upstream_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_greedy_generation_equals_ours(ours, theirs, ids: list[int], new_tokens: int = 32) -> None:
    """transformers' greedy generate() of an exported model `theirs` continues `ids` with the tokens our model
    `ours` picks by full forwards (no stop token, so every one of them is compared)."""
    import torch

    expected = list(ids)
    with torch.no_grad():
        for _ in range(new_tokens):
            expected.append(int(ours(torch.tensor([expected]))[0, -1].argmax()))
    prompt = torch.tensor([ids])
    generated = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                do_sample=False, eos_token_id=None)
    assert generated[0].tolist() == expected
