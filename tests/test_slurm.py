"""profiles/ptolemy, unchanged, against a real one-node SLURM shaped like a Ptolemy GPU node
(tests/slurm/twin.sh, which .ci/run starts). Only what cannot be the same is changed, on the command
line: the tiny preset instead of d20 (so base_dir is a temporary folder, not /scratch), and SLURM job
status from squeue because the twin keeps no accounting database."""

import json
import re
import subprocess

import pytest

from conftest import snakemake

TWIN = ["--configfile", "config/presets/tiny.yaml", "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2"]
TARGET = ".nanochat/base_checkpoints/model.pt"
CONFIG = ["--config", "tokenizer={vocab_size: 512}", "base_train={num_iterations: 5}"]


def twin_running() -> bool:
    try:
        return "gpu-a100" in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                            timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not twin_running(), reason="no SLURM twin (tests/slurm/twin.sh start)")


def submissions(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, `scontrol show job` fields) of every SLURM job, in submission order, from Snakemake's output."""
    jobs = []
    for job_id, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", output):
        record = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        jobs.append((rule, {"JobId": job_id, **dict(re.findall(r"(\w+)=(\S*)", record))}))
    return jobs


def submitted_jobs(output: str) -> dict[str, dict[str, str]]:
    """Rule -> the fields of its last SLURM job."""
    return dict(submissions(output))


def hours(limit: str) -> float:
    h, m, s = map(int, limit.split("-")[-1].split(":"))
    return h + m / 60 + s / 3600


def test_jobs_carry_ptolemys_account_partition_gpus_limit_and_mail(tmp_path):
    result = snakemake(tmp_path, TARGET, *TWIN, *CONFIG, profile="ptolemy", env={"EMAIL": "student@example.edu"},
                       timeout=900)
    assert (tmp_path / TARGET).is_file()
    jobs = submitted_jobs(result.stdout + result.stderr)
    assert set(jobs) == {"offline_shard", "tok_train", "base_train"}
    for rule, job in jobs.items():
        assert job["JobState"] == "COMPLETED", (rule, job)
        assert job["Account"] == "class-cse8990" and job["Partition"] == "gpu-a100"
        assert hours(job["TimeLimit"]) <= 12
        assert job["MailUser"] == "student@example.edu" and job["MailType"] == "END,FAIL"
    assert jobs["base_train"]["TresPerNode"] == "gres:gpu:a100:8"
    assert jobs["base_train"]["TimeLimit"] == "12:00:00"


def test_without_an_address_no_mail_flags_and_one_notice(tmp_path):
    result = snakemake(tmp_path, ".nanochat/tokenizer/tokenizer.json", *TWIN, *CONFIG, profile="ptolemy",
                       env={"EMAIL": ""}, timeout=900)
    output = result.stdout + result.stderr
    assert output.count("No e-mail address") == 1
    jobs = submitted_jobs(output)
    assert set(jobs) == {"offline_shard", "tok_train"}
    for job in jobs.values():
        assert job.get("MailType", "NONE") == "NONE" and "MailUser" not in job and job["JobState"] == "COMPLETED"


@pytest.mark.slow
def test_a_job_killed_at_its_time_limit_is_resubmitted_and_resumes_to_the_same_model(tmp_path):
    """Base training with a 1-minute limit: SLURM's SIGTERM makes the trainer checkpoint, SLURM records
    TIMEOUT, the rule's `retries` resubmit, the new job resumes, and it ends where an unlimited run ends."""
    config = ["--config", "tokenizer={vocab_size: 512}", "base_train={num_iterations: 1000}",
              "runtime={checkpoint_every: 50, eval_every: 500}"]
    snakemake(tmp_path / "straight", TARGET, *TWIN, *config, profile="ptolemy", timeout=900)
    limited = snakemake(tmp_path / "limited", TARGET, *TWIN, *config, "--set-resources", "base_train:runtime=1",
                        profile="ptolemy", timeout=1200)
    runs = [job for rule, job in submissions(limited.stdout + limited.stderr) if rule == "base_train"]
    assert len(runs) >= 2 and runs[0]["JobState"] == "TIMEOUT" and runs[-1]["JobState"] == "COMPLETED"
    log = (tmp_path / "limited/.nanochat/logs/base_train/base_train.log").read_text()  # the last attempt's
    resumed_at = int(re.search(r"resuming from \S+step_(\d+)", log).group(1))
    assert resumed_at % 50, "resumed from a periodic checkpoint, not from the one written on SLURM's SIGTERM"
    # Not bit-exact here, unlike the local resume test: a SLURM job asks for 16 CPUs (the profile's
    # request), so on this 2-core twin 16 threads share 2 cores and some CPU kernels then reduce in a
    # varying order. The same final loss, to the tolerance that leaves, is what the resume must give.
    straight, resumed = (json.loads((tmp_path / run / ".nanochat/base_checkpoints/base_train.json").read_text())
                         for run in ("straight", "limited"))
    assert len(resumed["history"]) == 1000
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], rel=2e-2)
    assert resumed["val_bpb"] == pytest.approx(straight["val_bpb"], rel=2e-2)
    print("SLURM base_train jobs:", [(j["JobId"], j["JobState"], j["TimeLimit"]) for j in runs])
