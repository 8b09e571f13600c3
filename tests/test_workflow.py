"""Real Snakemake runs of the workflow: targets, rerun semantics, config validation, both profiles."""

import json
import re

import pytest
import torch

from conftest import jobs_run, snakemake
from nanochat.dataset import iter_texts
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer

TARGETS = ["all", "report", "download", "export_all"]


def test_local_run_builds_a_working_tokenizer(tiny_run):
    tok_dir = tiny_run / ".nanochat" / "tokenizer"
    tokenizer = Tokenizer.load(tok_dir / "tokenizer.json")
    assert tokenizer.vocab_size == 512
    text = "In the beginning was the Word, 1234 times; naïve café ✓\n\tindented"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    token_bytes = torch.load(tok_dir / "token_bytes.pt")
    assert int(token_bytes[ids].sum()) == len(text.encode("utf-8"))
    special_ids = [tokenizer.special_id(t) for t in SPECIAL_TOKENS]
    assert len(set(special_ids)) == 9 and all(token_bytes[i] == 0 for i in special_ids)
    assert tokenizer.decode([tokenizer.bos_id] + ids) == "<|bos|>" + text
    record = json.loads((tok_dir / "tok_eval.json").read_text())
    assert record["vocab_size"] == 512 and 2.0 < record["val"]["bytes_per_token"] < 5.0
    val_texts = list(iter_texts([tiny_run / ".nanochat/base_data/offline/shard_00003.parquet"],
                                record["settings"]["max_chars"]))
    assert record["val"]["bytes"] == sum(len(t.encode("utf-8")) for t in val_texts)
    assert record["val"]["tokens"] == sum(len(tokenizer.encode(t)) for t in val_texts)


def test_rerun_after_tokenizer_change_reruns_only_downstream(tmp_path):
    first = snakemake(tmp_path, "tok_eval", "--config", "tok_train={vocab_size: 300}")
    assert jobs_run(first) == {"base_data": 4, "tok_train": 1, "tok_eval": 1}
    shards = sorted((tmp_path / ".nanochat" / "base_data" / "offline").glob("shard_*.parquet"))
    shard_mtimes = [p.stat().st_mtime_ns for p in shards]

    unchanged = snakemake(tmp_path, "tok_eval", "--config", "tok_train={vocab_size: 300}")
    assert jobs_run(unchanged) == {}

    changed = snakemake(tmp_path, "tok_eval", "--config", "tok_train={vocab_size: 320}")
    assert jobs_run(changed) == {"tok_train": 1, "tok_eval": 1}
    assert [p.stat().st_mtime_ns for p in shards] == shard_mtimes
    assert Tokenizer.load(tmp_path / ".nanochat/tokenizer/tokenizer.json").vocab_size == 320


@pytest.mark.parametrize("profile", ["local", "ptolemy"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_dry_runs(tmp_path, profile, target):
    result = snakemake(tmp_path, "-n", target, profile=profile, env={"EMAIL": "student@example.edu"})
    output = result.stdout + result.stderr
    assert "This was a dry-run" in output or "Nothing to be done" in output


def test_ptolemy_profile_plans_the_d20_download_on_scratch(tmp_path):
    result = snakemake(tmp_path, "-n", "download", profile="ptolemy", env={"USER": "student"})
    assert jobs_run(result)["download_shard"] == 240
    shard = "/scratch/ptolemy/users/student/nanochat/base_data/fineweb-edu/shard_00239.parquet"
    assert shard in result.stdout + result.stderr


def test_tokenizer_training_waits_only_for_its_own_shards(tmp_path):
    # 20 fineweb-edu shards to download; the tokenizer reads the first 2, so it needs those 2 downloads only.
    result = snakemake(tmp_path, "-n", "tok_train", "--config", "base_data={source: fineweb-edu, num_shards: 20}",
                       "tok_train={num_shards: 2}")
    assert jobs_run(result) == {"download_shard": 2, "tok_train": 1}
    shards = re.findall(r"shard_(\d+)\.parquet", result.stdout.split("rule tok_train")[1].split("\n\n")[0])
    assert sorted(set(shards)) == ["00000", "00001"]


def test_the_plan_of_the_d20_preset_says_its_size_steps_and_missing_downloads(tmp_path):
    result = snakemake(tmp_path, "plan", "--configfile", "config/presets/d20.yaml", "--config",
                       f"workflow={{base_dir: {tmp_path}/run}}")
    text = result.stdout
    assert "# Plan: course recipe, d20, 560,988,160 parameters" in text  # upstream's "561M"
    assert "| base_train | 21,400 | 1.12e+10 |" in text  # the course fork's d20 ran 21,400 steps
    assert "none declared by the profile (this machine); no hours" in text
    assert "Downloads: 0 of 253 present" in text and (tmp_path / "run/logs/plan/plan.log").read_text() in text


@pytest.mark.slow  # 30-50 s (torch and the meta-device models in the plan job); the d20 plan above is the fast one
def test_the_gpt2_plan_on_the_ptolemy_profile_is_one_job_and_says_what_is_assumed(tmp_path):
    """The 2026 recipe's d24 (upstream 92d63d4's speedrun, ratio 8) with the profile's 8 A100s: upstream's automatic
    batch of 2^20 tokens and its 5,568 steps, hours from an MFU the plan calls assumed, and no midtraining."""
    result = snakemake(tmp_path, "plan", "--configfile", "config/presets/gpt2.yaml", "config/ptolemy.yaml",
                       "--config", f"workflow={{base_dir: {tmp_path}/scratch}}", profile="ptolemy",
                       env={"USER": "student"}, timeout=300)
    text = result.stdout[result.stdout.index("# Plan"):]
    print(text)
    assert "# Plan: 2026 recipe, d24, 1,384,122,122 parameters" in text  # value embeddings included, as upstream
    assert "MFU 61.5% ASSUMED: no a100 run of the 2026 recipe is measured" in text
    assert "1,048,576 tokens per step (automatic from the horizon)" in text
    assert "| base_train | 5,568 | 5.84e+09 | 2.79e+19 | 5.0 | 1 |" in text  # one 12-hour job
    assert "Training with known steps: 5.0 h, 40 GPU-hours" in text
    assert "mid_train" not in text and "no midtraining" in text


def test_downloads_this_machine_cannot_reach_stop_the_run_before_any_job(tmp_path):
    fineweb = ["--config", "base_data={source: fineweb-edu, num_shards: 4}", "tok_train={num_shards: 2}"]
    result = snakemake(tmp_path, "tok_train", *fineweb, env={"HF_ENDPOINT": "http://127.0.0.1:9"}, check=False)
    assert result.returncode != 0 and not (tmp_path / ".nanochat").exists()
    assert "cannot reach the server of fineweb_edu (http://127.0.0.1:9)" in result.stderr
    assert jobs_run(snakemake(tmp_path, "-n", "tok_train", *fineweb)) == {"download_shard": 2, "tok_train": 1}


@pytest.mark.parametrize("override, named", [
    ("tok_train={vocab_size: abc}", "['vocab_size']"),
    ("tok_train={vocab_size: 100}", "['vocab_size']"),
    ("base_data={source: commoncrawl}", "['source']"),
    ("tok_train={vocab_sise: 4096}", "'vocab_sise' was unexpected"),
    # each value valid alone (the schema passes it), refused together by the stage, hours later in a job
    ("base_train={model_dim: 100}", "base_train.model_dim=100"),
    ("base_train={depth: 4, n_kv_head: 3}", "base_train.n_kv_head=3"),
    ("base_train={total_batch_size: 1000}", "base_train.total_batch_size=1000"),
    ("chat_sft={rows_per_step: 30}", "chat_sft.rows_per_step=30"),
    ("base_train={window_pattern: SXL}", "base_train.window_pattern='SXL'"),
])
def test_invalid_config_names_the_key_before_anything_runs(tmp_path, override, named):
    result = snakemake(tmp_path, "-n", "all", "--config", override, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Error validating config" in output and named in output
    assert not (tmp_path / ".nanochat").exists()
