"""Everything downstream of training works on a 2026-recipe model (issue 26, item 6): exact resume of
`base_train --recipe=2026` (best-fit loader state, MuonAdamW state), the web server and /v1, the terminal chat,
the chat evaluations and CORE scoring.

The model: depth 2, width 128, 256 positions, so layer 0's short window (128) cuts every sequence longer than
it; trained 30 steps on the tiny run's offline shards (vocabulary 512). Decoding through the KV cache (windows,
value embeddings, smear) is checked against full forwards without one (the windows as SDPA masks), on prompts
whose reply runs past the short window.
"""

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from openai import OpenAI

from conftest import upstream_module
from nanochat import layout, tasks
from nanochat.checkpoint import load_model, save_final
from nanochat.core_eval import evaluate_task, load_bundle, task_items
from nanochat.dataset import iter_texts
from nanochat.engine import Engine
from nanochat.gpt import GPT
from nanochat.scripts.chat_eval import last_token_logits
from nanochat.tasks.common import LETTERS
from nanochat.tokenizer import Tokenizer
from test_core_eval import UpstreamModel, UpstreamTokenizer, make_bundle

STEPS = 30
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A passage long enough that a prompt and its reply pass layer 0's 128-position window.
PASSAGE = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
           "darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And "
           "God said, Let there be light: and there was light. And God saw the light, that it was good: and God "
           "divided the light from the darkness.")


def train_command(tiny_run: Path, out: Path, *flags: str, processes: int = 1) -> list[str]:
    """A 2026-recipe base_train of the tiny model on the tiny run's shards, on `processes` (gloo). Its rates are
    x10 the recipe's: the recipe scales them by sqrt(1,024 / 2^19) for this batch, too little to learn in 30 steps."""
    base = tiny_run / ".nanochat"
    shards = sorted(str(p) for p in (base / "base_data/offline").glob("shard_*.parquet"))
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] * (processes > 1)
    return [sys.executable, *launcher, "-m", "nanochat.scripts.base_train", "--recipe=2026", "--depth=2",
            "--max_seq_len=256", "--device_batch_size=2", "--total_batch_size=1024", f"--num_iterations={STEPS}",
            "--warmup_steps=0", "--matrix_lr=0.2", "--embedding_lr=3", "--unembedding_lr=0.08", "--eval_every=0",
            "--eval_tokens=2048", "--log_every=1", f"--tokenizer={base}/tokenizer/tokenizer.json",
            f"--val={shards[-1]}", f"--out_dir={out}", f"--ckpt_dir={out}/steps", *flags, *shards[:-1]]


@pytest.fixture(scope="module")
def run_2026(tiny_run, tmp_path_factory) -> Path:
    """The out_dir of an uninterrupted 2026 run."""
    out = tmp_path_factory.mktemp("run_2026")
    subprocess.run(train_command(tiny_run, out, "--checkpoint_every=0"), check=True, capture_output=True, env=ENV)
    return out


@pytest.fixture(scope="module")
def model(run_2026) -> GPT:
    return load_model(run_2026)[0]


@pytest.fixture(scope="module")
def scrambled(run_2026, tmp_path_factory) -> Path:
    """The 2026 model's folder with its matrices redrawn at random: the 30-step model answers every prompt
    alike, these weights answer each differently, so answers that agree mean something."""
    model, meta = load_model(run_2026)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, p.size(1) ** -0.5)
    folder = tmp_path_factory.mktemp("scrambled")
    save_final(folder, model, meta)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tiny_run) -> Tokenizer:
    return Tokenizer.load(tiny_run / ".nanochat" / layout.TOKENIZER / "tokenizer.json")


@pytest.fixture(scope="module")
def base_dir(run_2026, tiny_run, tmp_path_factory) -> Path:
    """A workflow base_dir whose SFT model is the 2026 model, as the chat tools find one."""
    base = tmp_path_factory.mktemp("served") / ".nanochat"
    sft = base / layout.CHECKPOINTS["sft"]
    sft.mkdir(parents=True)
    for name in ("model.pt", "meta.json"):
        shutil.copy(run_2026 / name, sft)
    shutil.copytree(tiny_run / ".nanochat" / layout.TOKENIZER, base / layout.TOKENIZER)
    return base


def history(out: Path) -> list[dict]:
    """A run's step records, without their times."""
    return [{k: v for k, v in h.items() if k not in ("time", "tok_per_s")}
            for h in json.loads((out / "base_train.json").read_text())["history"]]


def assert_same_weights(out: Path, reference: Path) -> None:
    mine, theirs = torch.load(out / "model.pt"), torch.load(reference / "model.pt")
    assert mine.keys() == theirs.keys()
    assert [k for k in theirs if not torch.equal(mine[k], theirs[k])] == [], "weights differ"


# --- resume ---------------------------------------------------------------------------------------------

def test_a_2026_run_stopped_midway_resumes_to_the_uninterrupted_runs_weights_and_losses(tiny_run, run_2026,
                                                                                       tmp_path):
    """SIGUSR1 mid-run checkpoints (the only checkpoint) and exits 75; the rerun restores the best-fit loader's
    position, the Muon momentum and second moments and the AdamW moments, and ends bit for bit as the
    uninterrupted run."""
    cmd = train_command(tiny_run, tmp_path, "--checkpoint_every=0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 120
    while not any(f"step  3/{STEPS}" in log.read_text() for log in tmp_path.glob("steps/*/train.log")):
        assert proc.poll() is None and time.time() < deadline, "training did not reach step 3"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=120) == 75
    subprocess.run(cmd, check=True, capture_output=True, env=ENV, timeout=300)
    [log] = tmp_path.glob("steps/*/train.log")
    stopped = int(re.search(r"resuming from \S+ \(step (\d+)\)", log.read_text()).group(1))
    assert 3 <= stopped < STEPS
    assert history(tmp_path) == history(run_2026) and len(history(tmp_path)) == STEPS
    assert_same_weights(tmp_path, run_2026)


@pytest.mark.slow
def test_a_sharded_2026_run_on_two_processes_resumes_exactly_and_learns_as_ddp(tiny_run, tmp_path):
    """Two processes (gloo), each with the MuonAdamW state of its share of the parameters, checkpoint at step 15;
    rerun on two processes from there, they end bit for bit as their uninterrupted run, and with the losses of
    two processes that each hold the whole state (DDP) up to the order of the sums. (Not those of one process:
    the best-fit loader reads each process's own row groups, as upstream's.)"""
    sharded, ddp = tmp_path / "sharded", tmp_path / "ddp"
    subprocess.run(train_command(tiny_run, ddp, "--checkpoint_every=0", "--shard_optimizer=false", processes=2),
                   check=True, capture_output=True, env=ENV, timeout=300)
    cmd = train_command(tiny_run, sharded, "--checkpoint_every=15", processes=2)
    subprocess.run(cmd, check=True, capture_output=True, env=ENV, timeout=300)
    straight, weights = history(sharded), tmp_path / "straight"
    weights.mkdir()
    shutil.move(sharded / "model.pt", weights / "model.pt")
    [log] = sharded.glob("steps/*/train.log")
    whole = float(re.search(r"optimizer state per process: ([\d., ]+) MB", next(ddp.glob("steps/*/train.log"))
                            .read_text()).group(1).split(",")[0])
    shares = [float(mb) for mb in re.search(r"optimizer state per process: ([\d., ]+) MB", log.read_text())
              .group(1).split(",")]
    assert len(shares) == 2 and max(shares) < whole and sum(shares) == pytest.approx(whole, abs=0.01)
    for name in ("meta.json", "base_train.json"):  # the outputs of a run stopped after its step 15
        (sharded / name).unlink()
    shutil.rmtree(log.parent / f"step_{STEPS:06d}")
    subprocess.run(cmd, check=True, capture_output=True, env=ENV, timeout=300)
    assert f"resuming from {log.parent / 'step_000015'} (step 15)" in log.read_text()
    assert history(sharded) == straight
    assert_same_weights(sharded, weights)
    for a, b in zip(history(ddp), straight, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]


# --- generation: engine, web, CLI ---------------------------------------------------------------------

@torch.no_grad()
def full_forward_greedy(model: GPT, prompt: list[int], max_tokens: int, stop: set[int]) -> list[int]:
    """Greedy decoding by a full forward of the whole sequence per token: no KV cache."""
    ids = list(prompt)
    for _ in range(max_tokens):
        token = model(torch.tensor([ids]))[0, -1].argmax().item()
        if token in stop:
            break
        ids.append(token)
    return ids[len(prompt):]


def windows_matter(model: GPT, ids: list[int]) -> bool:
    """Whether the model's last logits on `ids` change when every layer sees all positions."""
    unwindowed = GPT(dataclasses.replace(model.config, window_pattern="L"))
    unwindowed.load_state_dict(model.state_dict())
    with torch.no_grad():
        return not torch.allclose(model(torch.tensor([ids]))[0, -1], unwindowed.eval()(torch.tensor([ids]))[0, -1])


def greedy_reply(model: GPT, tokenizer: Tokenizer, messages: list[dict], max_tokens: int) -> tuple[list, str]:
    """The Engine's greedy reply (tokens, text), its decoding checked against one full forward of the prompt and
    reply (no KV cache): every token its argmax, and every decoding step's logits its logits at that position."""
    engine = Engine(model, tokenizer)
    prompt = tokenizer.render_for_completion(messages)
    decoded = []  # the logits of each decoding step through the KV cache (the prefill's go through model.logits)
    hook = model.register_forward_hook(lambda module, args, logits: decoded.append(logits[0, -1]))
    try:
        tokens = list(engine.reply(prompt, max_tokens, 0.0, 0))
    finally:
        hook.remove()
    assert len(prompt) + len(tokens) > 128 + 16 and windows_matter(model, prompt + tokens)
    with torch.no_grad():
        full = model(torch.tensor([prompt + tokens]))[0, len(prompt) - 1:]
    assert tokens == full[:len(tokens)].argmax(-1).tolist()
    assert len(tokens) == max_tokens or full[-1].argmax().item() in engine.stop
    torch.testing.assert_close(torch.stack(decoded[:len(tokens)]), full[1:], rtol=1e-5, atol=1e-5)
    assert len(set(tokens)) > 3  # not one token repeated: agreement means something
    return tokens, tokenizer.decode(tokens)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(base_dir) -> OpenAI:
    """`chat_web` serving the 2026 model on a free port, once /health answers ok; an OpenAI client of its /v1."""
    port = free_port()
    log = base_dir.parent / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nanochat.scripts.chat_web", "--base_dir", str(base_dir),
                                 "--port", str(port), "--workers", "1"], env=ENV, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
                health = json.loads(response.read())
            break
        except OSError:  # not listening yet
            time.sleep(0.2)
    assert health["status"] == "ok" and health["workers"] == health["free_workers"] == 1
    yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    proc.terminate()
    proc.wait(timeout=30)


def test_v1_serves_the_2026_models_greedy_reply_whole_and_streamed(client, model, tokenizer):
    messages = [{"role": "user", "content": PASSAGE}]
    tokens, text = greedy_reply(model, tokenizer, messages, 40)
    request = {"model": "nanochat-sft", "messages": messages, "temperature": 0, "max_tokens": 40}
    reply = client.chat.completions.create(**request)
    assert reply.choices[0].message.content == text
    assert reply.usage.completion_tokens == len(tokens)
    chunks = list(client.chat.completions.create(**request, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices[0].finish_reason == ("length" if len(tokens) == 40 else "stop")


def test_the_terminal_chat_prints_the_2026_models_greedy_reply(base_dir, model, tokenizer):
    tokens, text = greedy_reply(model, tokenizer, [{"role": "user", "content": PASSAGE}], 30)
    result = subprocess.run([sys.executable, "-m", "nanochat.scripts.chat_cli", "--base_dir", str(base_dir), "-p",
                             PASSAGE, "-t", "0", "--max_tokens", "30"], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text + "\n"


# --- evaluations ----------------------------------------------------------------------------------------

def chat_eval(model_dir: Path, tiny_run: Path, out: Path, task: str, problems: int) -> subprocess.Popen:
    """The chat evaluation of one offline task on a model, 8 problems at a time, started."""
    return subprocess.Popen([sys.executable, "-m", "nanochat.scripts.chat_eval", f"--task={task}", "--source=offline",
                             f"--max_problems={problems}", "--max_new_tokens=12", "--batch_size=8",
                             f"--model_dir={model_dir}", f"--tokenizer={tiny_run}/.nanochat/tokenizer/tokenizer.json",
                             f"--out={out}"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def eval_items(task: str, problems: int) -> list[dict]:
    """The problems chat_eval draws: shuffled with its seed, cropped."""
    items = tasks.load(task, "offline", None)
    random.Random(1337).shuffle(items)
    return items[:problems]


def test_chat_eval_answers_are_those_of_full_forwards_past_the_windows(scrambled, tiny_run, tokenizer, tmp_path):
    """MMLU (categorical: one right-padded forward of 8 prompts) and HumanEval (generative: 8 prompts decoded
    together, each row at its own position in the KV cache) give each problem the answer that full forwards of
    it alone give; the prompts are longer than the short window."""
    model = load_model(scrambled)[0]
    running = {task: chat_eval(scrambled, tiny_run, tmp_path / f"{task}.json", task, 12)
               for task in ("mmlu", "humaneval")}
    for proc in running.values():
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    engine = Engine(model, tokenizer)

    def prompt(task: str, item: dict) -> list[int]:
        return tokenizer.render_for_completion([{"role": "user", "content": tasks.EVAL_TASKS[task].prompt(item)}])

    records = {task: json.loads((tmp_path / f"{task}.json").read_text()) for task in running}
    mmlu = eval_items("mmlu", 12)
    letters = [tokenizer.encode(letter)[0] for letter in LETTERS[:4]]
    with torch.no_grad():
        alone = torch.stack([model(torch.tensor([prompt("mmlu", item)]))[0, -1, letters] for item in mmlu])
    expected = [LETTERS[i] for i in alone.argmax(-1).tolist()]
    assert records["mmlu"]["answers"] == expected and len(set(expected)) > 1
    # the letters' logits of one padded forward (what chose them) are those of each prompt alone
    together = last_token_logits(model, [prompt("mmlu", item) for item in mmlu], "cpu")[:, letters]
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    humaneval = eval_items("humaneval", 12)
    expected = [tokenizer.decode(full_forward_greedy(model, prompt("humaneval", item), 12, engine.stop))
                for item in humaneval]
    assert records["humaneval"]["answers"] == expected and len(set(expected)) > 1
    for task, items in (("mmlu", mmlu), ("humaneval", humaneval)):  # most prompts longer than the short window
        assert sum(len(prompt(task, item)) > 128 for item in items) >= len(items) / 2, task
    assert windows_matter(model, prompt("mmlu", mmlu[0]))


@pytest.fixture(scope="module")
def upstream():
    """Upstream 48abd7d's nanochat/core_eval.py."""
    return upstream_module("core_eval", "CORE")


def test_core_scores_each_item_as_upstreams_full_forward_scorer(model, tokenizer, tiny_run, tmp_path, upstream):
    """Our CORE scorer (hidden states, the head on scored positions only; one item per forward and batched)
    against upstream 48abd7d's evaluate_example (logits of a full forward per item) on the 2026 model, over a
    bundle of every task type with sequences longer than the short window and than the context."""
    val = sorted((tiny_run / ".nanochat/base_data/offline").glob("shard_*.parquet"))[-1]
    make_bundle(tmp_path, model, tokenizer, " ".join(iter_texts([val], max_chars=300_000)).split())
    outcomes = []
    for task in load_bundle(tmp_path):
        data = task_items(task, -1)
        meta = {"task_type": task["task_type"], "num_fewshot": task["num_fewshot"],
                "continuation_delimiter": task["delimiter"]}
        theirs = [upstream.evaluate_example(i, UpstreamModel(model), UpstreamTokenizer(tokenizer), data, "cpu", meta)
                  for i in range(len(data))]
        assert evaluate_task(model, tokenizer, task, -1)["correct"] == theirs, task["label"]
        assert evaluate_task(model, tokenizer, task, -1, batch_tokens=4096)["correct"] == theirs, task["label"]
        outcomes += theirs
    assert any(outcomes) and not all(outcomes)
