"""Chat evaluation: answer checks, prompt rendering, and real runs from offline and hub sources."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import CONFIG, REPO, jobs_run, record, snakemake
from hub_server import HubServer
from nanochat import catalog, tasks
from nanochat.checkpoint import load_model
from nanochat.scripts.chat_eval import aggregates, last_token_logits
from nanochat.tasks import CHATCORE_TASKS, gsm8k, humaneval, spellingbee
from nanochat.tasks.common import multiple_choice_prompt
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer

GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def load_task(name: str, source: str = "offline", hub_dir=None):
    return tasks.load(name, source, hub_dir)


def test_answers_are_checked_as_each_task_defines():
    assert gsm8k.grade({"answer": "1200"}, "so 1,200 in all.\n#### 1,200")
    assert not gsm8k.grade({"answer": "1200"}, "the answer is 1200")  # no '####'
    assert spellingbee.grade({"answer": 3}, "There are 3")
    assert not spellingbee.grade({"answer": 3}, "There are 2")
    [problem] = [p for p in load_task("humaneval", "offline") if p["task_id"] == "HumanEval/0"]
    solution = next(p for p in __import__("test_execution").humaneval_problems()
                    if p["task_id"] == "HumanEval/0")["canonical_solution"]
    assert humaneval.grade(problem, f"```python\n{problem['prompt']}{solution}```")
    assert humaneval.grade(problem, solution)  # a bare body continues the signature
    assert not humaneval.grade(problem, "    return True\n")


def test_every_hub_task_reads_a_catalog_entry_the_workflow_downloads():
    hub = {name: tasks.EVAL_TASKS[name].hub for name in tasks.HUB_TASKS if tasks.EVAL_TASKS[name].hub}
    assert hub == catalog.CHAT_EVAL_TEST_SETS
    assert all(isinstance(catalog.CATALOG[name], catalog.HubFiles) for name in hub.values())


def test_offline_sources_load_real_items():
    mmlu, quartz = load_task("mmlu", "offline"), load_task("quartz", "offline")
    assert len(mmlu) == 1000 and all(len(q["choices"]) == 4 and 0 <= q["answer"] < 4 for q in mmlu)
    assert len(quartz) == 3860 and all(len(q["choices"]) == 2 for q in quartz)
    assert len(load_task("humaneval", "offline")) == 164
    assert all(item["word"].count(item["letter"]) == item["answer"] for item in load_task("spellingbee", "offline"))
    assert "not available offline" in load_task("gsm8k", "offline")


def test_completion_prompt_ends_with_assistant_start(tmp_path):
    tok = Tokenizer.train(["Multiple Choice question: which? - yes=A - no=B"] * 3, vocab_size=300)
    ids = tok.render_for_completion([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": multiple_choice_prompt(
                                         {"question": "which?", "choices": ["yes", "no"]})}])
    specials = {tok.special_id(t): t for t in SPECIAL_TOKENS}
    assert [specials[i] for i in ids if i in specials] == \
        ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>"]
    assert tok.decode(ids).startswith("<|bos|><|user_start|>Be brief.\n\nMultiple Choice question: which?\n- yes=A")


def test_offline_chat_eval_scores_the_tiny_model(straight_run):
    offline = "chat_eval={source: offline, max_problems: 4, max_new_tokens: 8}"
    run = snakemake(straight_run, ".nanochat/eval/chat_eval_base.json", *CONFIG, offline)
    assert jobs_run(run) == {"chat_eval_task": 4, "chat_eval": 1}  # one job per task with offline data
    result = record(straight_run, "chat_eval_base.json")
    tasks = result["tasks"]
    assert {n for n, t in tasks.items() if t["available"]} == {"MMLU", "HumanEval", "SpellingBee", "QuaRTz"}
    assert all("not available offline" in tasks[n]["reason"] for n in ("ARC-Easy", "ARC-Challenge", "GSM8K"))
    assert all(t["n"] == 4 for t in tasks.values() if t["available"])
    expected = sum(t["centered"] for t in tasks.values() if t["available"]) / 4
    assert result["chat_mean"] == pytest.approx(expected)
    assert result["chat_mean_tasks"] == ["MMLU", "HumanEval", "SpellingBee", "QuaRTz"]
    assert result["chatcore"] is None  # another task set: not upstream's ChatCORE
    # After a task's job failed (no task record, so no aggregate), the rerun runs that task alone.
    (straight_run / ".nanochat/eval/chat_eval/base/humaneval.json").unlink()
    (straight_run / ".nanochat/eval/chat_eval_base.json").unlink()
    again = snakemake(straight_run, ".nanochat/eval/chat_eval_base.json", *CONFIG, offline)
    assert jobs_run(again) == {"chat_eval_task": 1, "chat_eval": 1}
    rerun = record(straight_run, "chat_eval_base.json")["tasks"]
    assert [rerun[n].get("answers") for n in tasks] == [tasks[n].get("answers") for n in tasks]


def test_categorical_problems_scored_together_get_the_logits_each_gets_alone(straight_run):
    tokenizer = Tokenizer.load(straight_run / ".nanochat/tokenizer/tokenizer.json")
    model, _ = load_model(straight_run / ".nanochat/base_checkpoints", "cpu")
    task = tasks.EVAL_TASKS["mmlu"]
    prompts = [tokenizer.render_for_completion([{"role": "user", "content": task.prompt(item)}])
               for item in load_task("mmlu")[:12]]
    assert len({len(p) for p in prompts}) > 6  # right padding of different lengths
    alone = torch.cat([last_token_logits(model, [p], "cpu") for p in prompts])
    together = last_token_logits(model, prompts, "cpu")
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert (together.argmax(-1) == alone.argmax(-1)).all() and alone.std(0).mean() > 0.01  # rows differ


@pytest.mark.parametrize("task", ["spellingbee", "humaneval"])
def test_problems_generated_together_get_the_completion_each_gets_alone(straight_run, tmp_path, task):
    base = straight_run / ".nanochat"
    answers = {}
    for batch_size in (1, 8):
        out = tmp_path / f"{batch_size}.json"
        # in a process of its own: a stage takes its process offline (HF_HUB_OFFLINE), which later tests' downloads
        # would inherit
        subprocess.run([sys.executable, "-m", "nanochat.scripts.chat_eval", f"--task={task}", "--source=offline",
                        "--max_problems=12", "--max_new_tokens=16", f"--batch_size={batch_size}",
                        f"--model_dir={base}/base_checkpoints", f"--tokenizer={base}/tokenizer/tokenizer.json",
                        f"--out={out}"], check=True, capture_output=True)
        answers[batch_size] = json.loads(out.read_text())["answers"]
    assert len(answers[1]) == 12 and len(set(answers[1])) > 1  # answers that differ, so agreement means something
    assert answers[8] == answers[1]


def test_chatcore_only_over_upstreams_six_tasks_from_the_hub():
    def results(names, available=True):
        return {n: {"available": available, "centered": 0.5 * (i % 2)} for i, n in enumerate(names)}
    six = results(CHATCORE_TASKS)
    assert aggregates(six, "hub") == {"chatcore": 0.25, "chat_mean": 0.25, "chat_mean_tasks": list(CHATCORE_TASKS)}
    assert aggregates(six, "offline")["chatcore"] is None
    five = {**six, "GSM8K": {"available": False, "reason": "not downloaded"}}
    assert aggregates(five, "hub")["chatcore"] is None
    assert aggregates(five, "hub")["chat_mean"] == 0.5 * 2 / 5  # GSM8K was one of the three at 0.5
    assert aggregates({**six, **results(["QuaRTz"])}, "hub")["chatcore"] is None
    assert aggregates(results(["MMLU"], available=False), "offline") == \
        {"chatcore": None, "chat_mean": None, "chat_mean_tasks": []}


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.skipif(not GSM8K.is_file(), reason="needs ../shared/data/gsm8k (real GSM8K test set)")
def test_hub_chat_eval_downloads_every_task_then_scores_offline(straight_run, tmp_path):
    served = tmp_path / "served"
    gsm8k_rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:10]]
    humaneval_rows = __import__("test_execution").humaneval_problems()[:10]
    mmlu = [{"question": q["question"], "subject": "x", "choices": q["choices"], "answer": q["answer"]}
            for q in load_task("mmlu", "offline")[:10]]
    arc = [{"id": str(i), "question": f"Which is a planet? ({i})", "answerKey": "B",
            "choices": {"text": ["the Sun", "Mars", "the Moon"], "label": ["A", "B", "C"]}} for i in range(5)]
    rows = {"gsm8k_test": gsm8k_rows, "humaneval_test": humaneval_rows, "mmlu_test": mmlu, "arc_easy_test": arc,
            "arc_challenge_test": arc}
    for name, task_rows in rows.items():
        entry = catalog.CATALOG[name]
        write_parquet(served / entry.repo / entry.patterns[0].replace("*", "00000-of-00001"), task_rows)
    with HubServer(served) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home")}
        settings = "chat_eval={source: hub, max_problems: 3, max_new_tokens: 8}"
        snakemake(straight_run, "download", *CONFIG, settings, env=env)
        assert len(set(hub.gets())) == 5
        gets = len(hub.gets())
        snakemake(straight_run, ".nanochat/eval/chat_eval_base.json", *CONFIG, settings, env=env)
        assert len(hub.gets()) == gets, "the evaluation itself downloaded something"
    result = record(straight_run, "chat_eval_base.json")
    assert set(result["chat_mean_tasks"]) == set(CHATCORE_TASKS)
    assert result["chatcore"] == result["chat_mean"]  # upstream's six tasks on the real test sets: ChatCORE
    assert all(t["n"] == 3 for t in result["tasks"].values())
    assert result["data"]["gsm8k_test"] == f"hf://datasets/openai/gsm8k@{catalog.CATALOG['gsm8k_test'].revision}"

    # A GPU node without the network: one dataset gone, the evaluation names it before doing any work.
    missing = straight_run / ".nanochat/hub/gsm8k_test"
    shutil.rmtree(missing)
    base = straight_run / ".nanochat"
    result = subprocess.run([sys.executable, "-m", "nanochat.scripts.chat_eval", "--task=gsm8k", "--source=hub",
                             f"--hub_dir={base}/hub", f"--model_dir={base}/base_checkpoints",
                             f"--tokenizer={base}/tokenizer/tokenizer.json",
                             f"--out={tmp_path}/out.json"], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.json").exists()
