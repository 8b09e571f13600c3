"""Midtraining and SFT through real Snakemake targets: learning, stale-only reruns, resume after SIGKILL."""

import json
import os
import re
import signal
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import CHAT, REPO, UPSTREAM, jobs_run, record, snakemake
from hub_server import HubServer
from nanochat.catalog import CATALOG, MIXTURES
from nanochat.chat_data import IDENTITY_REPEATS
from nanochat.gpt import GPT, GPTConfig
from nanochat.scripts.chat_rl import policy_gradient_loss
from nanochat.scripts.chat_sft import ChatSftSettings
from nanochat.scripts.mid_train import MidTrainSettings
from nanochat.tasks.gsm8k import conversation as gsm8k_conversation
from test_base_train import training_pid

GSM8K_TRAIN = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def gsm8k_train_rows() -> list[dict]:
    """What the local hub serves as GSM8K's train split: RL and the mixtures read the same download
    (catalog entry gsm8k_train), so every test that serves it serves the same rows."""
    return [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:20]]


@pytest.mark.parametrize("model, stage", [("mid", "mid_train"), ("sft", "chat_sft")])
def test_each_chat_stage_learns_its_own_distribution(chat_run, model, stage):
    result = record(chat_run, f"{stage}.json")
    assert result["num_steps"] == 20 and len(result["history"]) == 20
    assert result["val_loss"] < result["initial_val_loss"], result
    spelling = {"mid_train": 1000, "chat_sft": 150}[stage]  # the tiny preset's rows of each spelling task
    assert result["mixture"] == {"chatterbot": 2026, "simple_spelling": spelling, "spelling_bee": spelling}
    assert record(chat_run, f"chat_eval_{model}.json")["tasks"]["MMLU"]["n"] == 4


def test_changing_an_sft_setting_reruns_only_sft_its_eval_and_the_report(chat_run):
    result = snakemake(chat_run, "-n", "report", *CHAT, "chat_sft={init_lr_frac: 0.05}")
    assert jobs_run(result) == {"chat_sft": 1, "chat_eval_task": 4, "chat_eval": 1, "report": 1}  # 4 offline tasks


def test_sigkilled_sft_resumes_instead_of_restarting(chat_run):
    changed = CHAT + ["chat_sft={num_iterations: 20, init_lr_frac: 0.03}"]
    steps = chat_run / ".nanochat/sft_checkpoints/steps"
    earlier_runs = set(steps.iterdir())  # the changed settings give a new run folder
    proc = snakemake(chat_run, ".nanochat/sft_checkpoints/model.pt", *changed, wait=False)
    deadline = time.time() + 300
    while not [d for d in steps.iterdir() if d not in earlier_runs and (d / "step_000010/meta.json").exists()]:
        assert proc.poll() is None and time.time() < deadline, "no SFT step checkpoint appeared"
        time.sleep(0.2)
    pid = training_pid(chat_run, "nanochat.scripts.chat_sft")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0  # the rule's `retries` restarted it
    log = (chat_run / ".nanochat/logs/chat_sft/chat_sft.log").read_text()
    assert "resuming from" in log
    history = record(chat_run, "chat_sft.json")["history"]
    assert [h["step"] for h in history] == list(range(1, 21))


def test_policy_gradient_raises_the_probability_of_rewarded_samples():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, vocab_size=32, sequence_len=8))
    model.init_weights()
    x = torch.tensor([[1, 2, 3], [1, 2, 3]])
    y = torch.tensor([[-1, 5, 6], [-1, 7, 8]])  # the prompt's target is not trained
    advantages = torch.tensor([0.5, -0.5])  # the first sample was rewarded, the second not

    def logprob(row):
        logits = model(x[row:row + 1])
        return sum(torch.log_softmax(logits[0, t], -1)[y[row, t]] for t in (1, 2)).item()

    before = [logprob(0), logprob(1)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    policy_gradient_loss(model, (x, y, advantages)).backward()
    optimizer.step()
    assert logprob(0) > before[0] and logprob(1) < before[1]


@pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason="needs ../shared/data/gsm8k (real GSM8K train set)")
def test_rl_runs_on_gsm8k_from_the_hub_when_enabled(chat_run, tmp_path):
    rows = gsm8k_train_rows()
    served = tmp_path / "served" / CATALOG["gsm8k_train"].repo / "main"
    served.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), served / "train-00000-of-00001.parquet")
    rl = ["workflow={chat_rl: true}", "chat_rl={num_iterations: 3, questions_per_step: 2, samples_per_question: 4, "
          "max_new_tokens: 12}"]
    with HubServer(tmp_path / "served") as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home")}
        snakemake(chat_run, ".nanochat/rl_checkpoints/model.pt", *CHAT, *rl, env=env)
    result = record(chat_run, "chat_rl.json")
    assert result["num_steps"] == 3 and result["questions"] == 20
    assert all(0.0 <= h.get("mean_reward", 0.0) <= 1.0 for h in result["history"])
    assert result["settings"]["samples_per_question"] == 4


def test_gsm8k_calculator_annotations_become_tool_calls():
    [user, assistant] = gsm8k_conversation("Q?", "3 packs of 4 is <<3*4=12>>12 apples.\n#### 12")
    assert user == {"role": "user", "content": "Q?"}
    assert assistant["content"] == [{"type": "text", "text": "3 packs of 4 is "}, {"type": "python", "text": "3*4"},
                                    {"type": "python_output", "text": "12"},
                                    {"type": "text", "text": "12 apples.\n#### 12"}]


@pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason="needs ../shared/data/gsm8k (real GSM8K train set)")
def test_hub_mixtures_download_and_train(chat_run, tmp_path):
    served = tmp_path / "served"
    smoltalk = [{"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello!"}]}
                for i in range(30)]
    mmlu_aux = [{"train": {"question": f"2+{i}?", "subject": "", "choices": ["1", "2", "3", str(2 + i)],
                           "answer": 3}} for i in range(20)]
    arc = [{"id": str(i), "question": f"Which is a planet? ({i})", "answerKey": "B",
            "choices": {"text": ["the Sun", "Mars", "the Moon"], "label": ["A", "B", "C"]}} for i in range(10)]
    gsm8k = gsm8k_train_rows()
    for path, rows in (("HuggingFaceTB/smol-smoltalk/data/train-00000-of-00001.parquet", smoltalk),
                       ("HuggingFaceTB/smol-smoltalk/data/test-00000-of-00001.parquet", smoltalk[:3]),
                       ("cais/mmlu/auxiliary_train/train-00000-of-00001.parquet", mmlu_aux),
                       ("openai/gsm8k/main/train-00000-of-00001.parquet", gsm8k),
                       ("allenai/ai2_arc/ARC-Easy/train-00000-of-00001.parquet", arc),
                       ("allenai/ai2_arc/ARC-Challenge/train-00000-of-00001.parquet", arc[:5])):
        (served / path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), served / path)
    identity = [[{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am nanochat."}]] * 3
    (served / "identity_conversations.jsonl").write_text("".join(json.dumps(c) + "\n" for c in identity))
    (served / "words_alpha.txt").write_text("zyzzyva\r\nquokka\r\nxylophone\r\n")  # dwyl's CRLF lines
    hub = ["mid_train={mixture: hub, num_iterations: 4, simple_spelling_rows: 10, spelling_bee_rows: 6}",
           "chat_sft={mixture: hub, num_iterations: 4, smoltalk_rows: 12, simple_spelling_rows: 4, "
           "spelling_bee_rows: 2}"]
    with HubServer(served) as server:  # it also serves plain files under /files/, the URL files' mirror here
        env = {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
               "NANOCHAT_DOWNLOAD_MIRROR": f"{server.endpoint}/files"}
        snakemake(chat_run, ".nanochat/sft_checkpoints/model.pt", *CHAT, *hub, env=env)
    assert record(chat_run, "mid_train.json")["mixture"] == {"smoltalk": 30, "mmlu_aux": 20, "gsm8k_train": 20,
                                                             "identity": 6, "simple_spelling": 10, "spelling_bee": 6}
    assert record(chat_run, "mid_train.json")["data"]["smoltalk"] == f"hf://datasets/{CATALOG['smoltalk'].repo}" \
        f"@{CATALOG['smoltalk'].revision}"  # the record names the pinned revision it trained on
    assert record(chat_run, "chat_sft.json")["mixture"] == {"arc_easy_train": 10, "arc_challenge_train": 5,
                                                             "gsm8k_train": 20, "smoltalk": 12, "identity": 3,
                                                             "simple_spelling": 4, "spelling_bee": 2}
    assert CATALOG["words_alpha"].describe() == record(chat_run, "chat_sft.json")["data"]["words_alpha"]


UPSTREAM_SCRIPTS = UPSTREAM / "scripts"


@pytest.mark.skipif(not UPSTREAM_SCRIPTS.is_dir(), reason="needs upstream nanochat in ../shared/anchors")
@pytest.mark.parametrize("stage, settings", [("mid_train", MidTrainSettings), ("chat_sft", ChatSftSettings)])
def test_hub_mixture_defaults_are_upstreams_composition(stage, settings):
    """The d20 (default) hub mixtures against upstream 48abd7d's training mixture, source by source."""
    script = (UPSTREAM_SCRIPTS / f"{stage}.py").read_text()
    upstream = script[script.index("TaskMixture(["):script.index("])", script.index("TaskMixture(["))]
    ours = settings()

    def size(task: str) -> int:
        return int(re.search(rf"{task}\(size=(\d+)", upstream).group(1))

    assert (size("SimpleSpelling"), size("SpellingBee")) == (ours.simple_spelling_rows, ours.spelling_bee_rows)
    smoltalk = re.search(r'SmolTalk\(split="train"(?:, stop=([\d_]+))?\)', upstream).group(1)
    assert ours.smoltalk_rows == (int(smoltalk) if smoltalk else -1)
    assert upstream.count("CustomJSON(") == IDENTITY_REPEATS[stage]
    named = {"SmolTalk(": "smoltalk", 'MMLU(subset="auxiliary_train"': "mmlu_aux", "GSM8K(": "gsm8k_train",
             'ARC(subset="ARC-Easy"': "arc_easy_train", 'ARC(subset="ARC-Challenge"': "arc_challenge_train"}
    assert {entry for call, entry in named.items() if call in upstream} == set(MIXTURES[stage])
    assert set(re.findall(r"^\s+(\w+)\(", upstream, re.M)) <= {"SmolTalk", "MMLU", "GSM8K", "ARC", "CustomJSON",
                                                               "SimpleSpelling", "SpellingBee"}  # nothing else
