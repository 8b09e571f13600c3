"""report.md: the summary table from fixture records, valid plots, and the end-to-end numbers."""

import re

import matplotlib.image

from conftest import CHAT, record, snakemake
from nanochat.layout import PLOTS
from nanochat.scripts.report import plot, render, summary_table


def chat_record(mmlu: float, chat_mean: float) -> dict:
    return {"chatcore": None, "chat_mean": chat_mean, "chat_mean_tasks": ["MMLU"], "settings": {"source": "offline"},
            "tasks": {
        "MMLU": {"available": True, "accuracy": mmlu, "n": 4, "baseline": 0.25, "centered": 0.0, "wall_time_s": 1.0},
        "GSM8K": {"available": False, "reason": "not available offline: no package ships GSM8K"}}}


def history(n: int, metric: str) -> list[dict]:
    return [{"step": i, "loss": 5.0 - i / n, "lr_mult": 1.0, "tok_per_s": 1000.0, **({metric: 3.0} if i == n else {})}
            for i in range(1, n + 1)]


FIXTURE = {
    "base_eval": {"core": 0.1234, "available": True, "tasks": {}, "max_per_task": 16},
    "chat_eval_mid": chat_record(0.25, 0.0),
    "chat_eval_sft": chat_record(0.5, 0.3333),
}


def test_summary_table_cells():
    assert summary_table(FIXTURE, rl_enabled=False) == [
        ["CORE", "0.1234", "", "", "RL disabled"],
        ["ARC-Challenge", "", "not evaluated", "not evaluated", "RL disabled"],
        ["ARC-Easy", "", "not evaluated", "not evaluated", "RL disabled"],
        ["GSM8K", "", "not available offline", "not available offline", "RL disabled"],
        ["HumanEval", "", "not evaluated", "not evaluated", "RL disabled"],
        ["MMLU", "", "0.2500", "0.5000", "RL disabled"],
        ["ChatCORE", "", "not available offline", "not available offline", "RL disabled"],
        ["Chat mean", "", "0.0000", "0.3333", "RL disabled"],
    ]
    hub = {**FIXTURE, "chat_eval_sft": {**FIXTURE["chat_eval_sft"], "chatcore": 0.3333, "settings": {"source": "hub"}}}
    hub.pop("chat_eval_mid")
    assert summary_table(hub, rl_enabled=False)[-1] == ["ChatCORE", "", "not run", "0.3333", "RL disabled"]
    offline = {**FIXTURE, "base_eval": {"core": None, "available": False, "reason": "not available offline: ..."}}
    table = summary_table(offline, rl_enabled=True)
    assert table[0] == ["CORE", "not available offline", "", "", ""] and table[5][4] == "not run"


def test_plots_are_valid_pngs(tmp_path):
    records = {"base_train": {"history": history(10, "val_bpb")}, "mid_train": {"history": history(5, "val_loss")},
               "chat_sft": {"history": history(5, "val_loss")}}
    plot(records, tmp_path)
    for name in PLOTS:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(tmp_path / name).shape[0] > 100


def test_report_numbers_equal_the_stage_records(chat_run):
    text = (chat_run / ".nanochat/report/report.md").read_text()
    summary = text.split("## Summary")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in summary.splitlines() if re.match(r"\| (CORE|ARC|GSM8K|HumanEval|MMLU|Chat)", line)}
    for column, stage in ((1, "mid"), (2, "sft")):
        result = record(chat_run, f"chat_eval_{stage}.json")
        assert rows["MMLU"][column] == f"{result['tasks']['MMLU']['accuracy']:.4f}"
        assert rows["HumanEval"][column] == f"{result['tasks']['HumanEval']['accuracy']:.4f}"
        assert rows["Chat mean"][column] == f"{result['chat_mean']:.4f}"
        assert rows["ChatCORE"][column] == "not available offline"  # the offline tasks are another set
        assert rows["GSM8K"][column] == "not available offline"
    assert rows["CORE"][0] == "not available offline" and rows["CORE"][3] == "RL disabled"
    assert "RL: disabled in config" in text
    assert "It is not upstream's ChatCORE" in text and "Chat mean " in text.split("## Summary")[1]
    base = record(chat_run, "base_train.json")
    assert f"validation {base['val_bpb']:.4f} bits/byte" in text
    for name in PLOTS:
        assert f"]({name})" in text and (chat_run / ".nanochat/report" / name).is_file()


def test_cluster_runs_copy_the_report_into_the_working_directory(chat_run):
    snakemake(chat_run, "report", *CHAT, "report={copy_to_workdir: true, hourly_rate: 24}")
    copied = (chat_run / "report.md").read_text()
    assert "](.nanochat/report/loss.png)" in copied and "at $24.0/h" in copied


def test_render_needs_no_optional_stage(tmp_path):
    minimal = {"tok_train": {"vocab_size": 512, "train_chars": 10, "train_docs": 1, "train_time_s": 0.1,
                             "python": "3.11"},
               "base_train": {"num_params": 1, "model_config": {"n_layer": 1, "n_embd": 64}, "num_steps": 1,
                              "tokens": 1, "world_size": 1, "device": "cpu", "wall_time_s": 1.0, "final_loss": 1.0,
                              "val_bpb": 1.0, "history": history(1, "val_bpb")}}
    text = render(minimal, rl_enabled=False, hourly_rate=0)
    assert "## Midtraining\n\nNot run." in text and "RL: disabled in config" in text


def test_a_2026_run_says_it_has_no_midtraining(tmp_path):
    minimal = {"tok_train": {"vocab_size": 512, "train_chars": 10, "train_docs": 1, "train_time_s": 0.1,
                             "python": "3.11"},
               "base_train": {"num_params": 1, "model_config": {"n_layer": 1, "n_embd": 64}, "num_steps": 1,
                              "settings": {"recipe": "2026"}, "tokens": 1, "world_size": 1, "device": "cpu",
                              "wall_time_s": 1.0, "final_loss": 1.0, "val_bpb": 1.0, "history": history(1, "val_bpb")}}
    text = render(minimal, rl_enabled=False, hourly_rate=0)
    assert "| recipe | 2026 (upstream 92d63d4): base model, then SFT straight from it, no midtraining |" in text
    assert "## Midtraining\n\nNo midtraining: the 2026 recipe fine-tunes the base model directly" in text
    assert "| MMLU |  | no midtraining (2026) | not run | RL disabled |" in text
    minimal["base_train"]["settings"] = {}  # a record from before the 2026 recipe: the course's
    assert "| recipe | course (upstream 48abd7d)" in render(minimal, rl_enabled=False, hourly_rate=0)


def test_snakemakes_own_html_report_works(chat_run):
    snakemake(chat_run, "--report", str(chat_run / "report.html"), "report", *CHAT)
    html = (chat_run / "report.html").read_text(errors="replace")
    assert "loss.png" in html and "report.md" in html
