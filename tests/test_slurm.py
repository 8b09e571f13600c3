"""profiles/ptolemy, unchanged, against a real one-node SLURM shaped like a Ptolemy GPU node
(tests/slurm/twin.sh, which .ci/run starts). Only what cannot be the same is changed, on the command
line: the tiny preset instead of d20 (so base_dir is a temporary folder, not /scratch), and SLURM job
status from squeue because the twin keeps no accounting database."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, jobs_run, snakemake
from hub_server import HubServer
from nanochat.catalog import CATALOG
from nanochat.checkpoint import read_attempts
from nanochat.dataset import build_offline_shard
from nanochat.layout import shard_name

TWIN = ["--configfile", "config/presets/tiny.yaml", "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2"]
TARGET = ".nanochat/base_checkpoints/model.pt"
CONFIG = ["--config", "tok_train={vocab_size: 512}", "base_train={num_iterations: 5}"]


def twin_running() -> bool:
    try:
        return "gpu-a100" in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                            timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not twin_running(), reason="no SLURM twin (tests/slurm/twin.sh start)")


def with_venv_path() -> dict[str, str]:
    """This environment with the running Python's bin folder first, as an activated venv has it."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


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
    assert set(jobs) == {"base_data", "tok_train", "base_train"}
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
    assert set(jobs) == {"base_data", "tok_train"}
    for job in jobs.values():
        assert job.get("MailType", "NONE") == "NONE" and "MailUser" not in job and job["JobState"] == "COMPLETED"


@pytest.fixture(scope="module")
def straight_1000(tmp_path_factory) -> Path:
    """1,000 tiny base-training steps through SLURM without a limit: what an interrupted run must end at."""
    workdir = tmp_path_factory.mktemp("straight")
    snakemake(workdir, TARGET, *TWIN, *long_config(300), profile="ptolemy", timeout=900)
    return workdir


def long_config(stop_before_limit: int) -> list[str]:
    """1,000 tiny base-training steps, checkpointing every 50."""
    return ["--config", "tok_train={vocab_size: 512}", "base_train={num_iterations: 1000}",
            f"runtime={{checkpoint_every: 50, eval_every: 500, stop_before_limit: {stop_before_limit}}}"]


def check_attempts_chain(attempts: list[dict], stopped: str, steps: int, killed_ok: bool = False) -> None:
    """A run of time-limited jobs: every attempt but the last stopped (`stopped`: how) or completed its steps
    before SLURM's limit came during its final evaluation or save (the job is then TIMEOUT and retried); each
    attempt starts where the previous ended, from the checkpoint its stop (or its last step) wrote. With
    `killed_ok`, an attempt may also have been killed before its stop checkpoint (no outcome): the next then
    starts from its newest periodic checkpoint, after its own start."""
    for attempt in attempts[:-1]:
        outcome = attempt["outcome"] or ""
        killed = killed_ok and attempt["outcome"] is None
        assert killed or outcome.startswith(stopped) or (outcome == "completed" and attempt["end_step"] == steps), \
            attempts
    assert attempts[-1]["outcome"] == "completed" and attempts[-1]["end_step"] == steps
    for attempt, following in zip(attempts, attempts[1:]):
        if attempt["outcome"] is None:
            assert following["start_step"] > attempt["start_step"], attempts  # onwards, from a periodic one
        else:
            assert following["start_step"] == attempt["end_step"] > attempt["start_step"]  # from its stop, onwards


@pytest.mark.slow
@pytest.mark.parametrize("stop_before_limit, first_state", [(300, "FAILED"), (0, "TIMEOUT")],
                         ids=["stops-before-the-limit", "killed-at-the-limit"])
def test_a_job_out_of_time_checkpoints_is_resubmitted_and_resumes_to_the_same_model(
        straight_1000, tmp_path, stop_before_limit, first_state):
    """Base training with a 1-minute limit. By default the trainer reads the job's end time from squeue,
    checkpoints shortly before it and exits 75 (FAILED, before the limit); with stop_before_limit 0 it
    runs into the limit, SLURM's SIGTERM makes it checkpoint (TIMEOUT). Either way the rule's `retries`
    resubmit it, the new job resumes, and one command ends where an unlimited run ends: however many
    1-minute jobs 1,000 steps take on this machine, each of them advances, so the retries go on."""
    limited = snakemake(tmp_path, TARGET, *TWIN, *long_config(stop_before_limit), "--set-resources",
                        "base_train:runtime=1", profile="ptolemy", timeout=2400)
    runs = [job for rule, job in submissions(limited.stdout + limited.stderr) if rule == "base_train"]
    print("SLURM base_train jobs:", [(j["JobId"], j["JobState"], j["RunTime"], j["TimeLimit"]) for j in runs])
    assert len(runs) >= 2 and runs[0]["JobState"] == first_state and runs[-1]["JobState"] == "COMPLETED"
    [run] = (tmp_path / ".nanochat/base_checkpoints/steps").glob("*")
    attempts = read_attempts(run)
    print("attempts:", [(a["start_step"], a["end_step"], a["outcome"]) for a in attempts])
    assert [a["slurm_job"] for a in attempts] == [job["JobId"] for job in runs]  # every job trained
    expected = "stopped on " + ("the SLURM time limit in " if stop_before_limit else "SIGTERM")
    # Each attempt starts at the step its predecessor stopped on, so from the stop's checkpoint: that step may
    # also be a periodic one (SIGTERM during a periodic save stops right after it), which is no failure.
    check_attempts_chain(attempts, expected, 1000)
    # Not bit-exact here, unlike the local resume test: a SLURM job asks for 16 CPUs (the profile's
    # request), so on this 2-core twin 16 threads share 2 cores and some CPU kernels then reduce in a
    # varying order. The same final loss, to the tolerance that leaves, is what the resume must give.
    straight, result = (json.loads((run / ".nanochat/base_checkpoints/base_train.json").read_text())
                        for run in (straight_1000, tmp_path))
    assert len(result["history"]) == 1000
    assert result["final_loss"] == pytest.approx(straight["final_loss"], rel=2e-2)
    assert result["val_bpb"] == pytest.approx(straight["val_bpb"], rel=2e-2)


def test_the_plan_on_the_ptolemy_profile_counts_hours_and_jobs_on_its_gpus(tmp_path):
    """The d20 plan with the unchanged profile: base_train's 8 A100s and 12-hour limit, no job submitted."""
    result = snakemake(tmp_path, "plan", "--config", f"workflow={{base_dir: {tmp_path}/scratch}}",
                       "report={hourly_rate: 32}", profile="ptolemy", timeout=300)
    text = result.stdout
    print(text[text.index("# Plan"):])
    assert "GPUs per training job: 8 x a100; MFU 61.5%" in text
    assert "| base_train | 21,400 | 1.12e+10 | 3.92e+19 | 7.1 | 1 |" in text  # the course fork's 7 h 05 min
    assert "Training with known steps: 7.1 h, 57 GPU-hours, $227 at $32.0/h." in text
    assert "submitted with SLURM jobid" not in text + result.stderr


def test_without_internet_all_submits_nothing_and_says_to_download_first(tmp_path):
    """On a login or GPU node without internet, `all` with its downloads missing starts no job at all."""
    result = snakemake(tmp_path, "all", *TWIN, *ALL, profile="ptolemy", check=False, timeout=300,
                       env={"HF_ENDPOINT": "http://127.0.0.1:9", "NANOCHAT_DOWNLOAD_MIRROR": "http://127.0.0.1:9"})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "submitted with SLURM jobid" not in output
    assert "nothing was started: this machine cannot reach the server of" in output
    assert "snakemake --profile profiles/ptolemy download" in output
    assert not (tmp_path / ".nanochat").exists()


@pytest.mark.slow
def test_after_a_lost_controller_a_rerun_starts_no_second_trainer(tmp_path):
    """The Snakemake that submitted base_train dies (kill -9: an SSH session dropped without tmux); its SLURM job
    goes on. After --unlock the same command, with its 20 retries, must submit no base_train job at all (it
    used to submit job after job, each refusing at once, each first queued for 8 GPUs): it stops at once,
    naming the running job, and leaves the run's checkpoints alone. base_train asks for 2 GPUs and 4 CPUs here,
    so that two would fit on the twin's one node, as they would on two nodes of a cluster."""
    args = [TARGET, *TWIN, *long_config(0), "workflow={training_retries: 0}", "base_train={num_iterations: 5000}",
            "--set-resources", "base_train:gres=gpu:a100:2", "base_train:cpus_per_task=4"]
    controller = snakemake(tmp_path, *args, profile="ptolemy", wait=False)
    steps = tmp_path / ".nanochat/base_checkpoints/steps"
    deadline = time.time() + 600
    while not list(steps.glob("*/step_000050/meta.json")):
        assert controller.poll() is None and time.time() < deadline, "the training job made no checkpoint"
        time.sleep(1)
    os.kill(controller.pid, signal.SIGKILL)
    controller.wait()
    [first] = [job for rule, job in submissions((tmp_path / "snakemake.out").read_text()) if rule == "base_train"]
    try:
        snakemake(tmp_path, "--unlock", *args, profile="ptolemy")
        default_retries = [arg for arg in args if arg != "workflow={training_retries: 0}"]
        rerun = snakemake(tmp_path, *default_retries, profile="ptolemy", check=False, timeout=900)
        assert rerun.returncode != 0
        assert not [job for rule, job in submissions(rerun.stdout + rerun.stderr) if rule == "base_train"]
        assert f"base_train was not started: it is still being trained by SLURM job {first['JobId']}" in rerun.stderr
        assert f"scancel {first['JobId']}" in rerun.stderr
        state = subprocess.run(["squeue", "-h", "-j", first["JobId"], "-o", "%T"], capture_output=True, text=True)
        assert state.stdout.strip() == "RUNNING", "the first job was disturbed"
        [run] = steps.iterdir()
        assert [a["slurm_job"] for a in read_attempts(run)] == [first["JobId"]]  # the second never trained
    finally:
        subprocess.run(["scancel", first["JobId"]])  # SIGTERM: it checkpoints, exits and releases the lock
    deadline = time.time() + 300
    while (run / "trainer.lock").exists():
        assert time.time() < deadline, "the cancelled job did not release the run's lock"
        time.sleep(1)
    assert "stopped at step" in (run / "train.log").read_text()


# The whole tiny pipeline on fineweb-edu-format shards served by a local hub (the devel node's
# internet), kept small: 5 steps per training stage, 2 problems per chat task.
HUB_REPO = CATALOG["fineweb_edu"].repo
# Jobs of a training rule that fails every time: the first and its `workflow.training_retries` (3 here; 20
# by default, each retry after the first ending at once since the previous attempt made no progress).
TRAINING_JOBS = 4
ALL = ["--config", "workflow={training_retries: 3}", "base_data={source: fineweb-edu, num_shards: 3}",
       "tok_train={vocab_size: 512}",
       "base_train={num_iterations: 5}", "base_loss={split_tokens: 8192}", "mid_train={num_iterations: 5}",
       "chat_sft={num_iterations: 5}", "chat_eval={max_problems: 2, max_new_tokens: 16}",
       "runtime={eval_tokens: 8192}"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    served = tmp_path_factory.mktemp("hub")
    (served / HUB_REPO).mkdir(parents=True)
    for i in range(3):
        build_offline_shard(i, 3, served / HUB_REPO / shard_name(i))
    with HubServer(served) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, hub) -> dict:
    """`all` through SLURM twice: first with SFT failing (its step-checkpoint folder is blocked by a file,
    as a full or read-only scratch would), then, the fault removed, the same command again."""
    workdir = tmp_path_factory.mktemp("cluster")
    blocker = workdir / ".nanochat/sft_checkpoints/steps"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(workdir / "hf-home"), "EMAIL": "student@example.edu"}
    failed = snakemake(workdir, "all", *TWIN, *ALL, profile="ptolemy", env=env, check=False, timeout=1500)
    first = submissions(failed.stdout + failed.stderr)  # read now: SLURM forgets finished jobs after 5 min
    requests_after_first = len(hub.requests)
    mid_eval = workdir / ".nanochat/eval/chat_eval_mid.json"
    mid_eval_written = mid_eval.stat().st_mtime_ns
    blocker.unlink()
    rerun = snakemake(workdir, "all", *TWIN, *ALL, profile="ptolemy", env=env, timeout=900)
    return {"workdir": workdir, "failed": failed, "rerun": rerun, "env": env, "first": first,
            "second": submissions(rerun.stdout + rerun.stderr),
            "hub_requests": (requests_after_first, len(hub.requests)),
            "mid_eval_unchanged": mid_eval.stat().st_mtime_ns == mid_eval_written}


@pytest.mark.slow  # the whole tiny pipeline through SLURM: about 7 minutes on 2 cores
def test_all_runs_downloads_locally_and_every_compute_rule_as_a_slurm_job(cluster_run):
    failed, first, second = cluster_run["failed"], cluster_run["first"], cluster_run["second"]
    assert failed.returncode != 0
    downloads = "localrule download_shard:"
    assert (failed.stdout + failed.stderr).count(downloads) == 3, "the shards were not downloaded locally"
    submitted = {rule for rule, _ in first + second}
    # Local besides the downloads: `all` (a target, no command), the report (seconds of Markdown and plots)
    # and the evaluations' aggregates (means over their task records).
    local = {"all", "download_shard", "report", "base_eval", "chat_eval"}
    planned = set(jobs_run(failed)) - local  # every job of the first run's plan
    assert submitted == planned and "download_shard" not in submitted
    assert {"tok_train", "base_train", "mid_train", "chat_sft", "chat_eval_task"} <= submitted
    assert not submitted & local
    for rule, job in second:
        assert job["JobState"] == "COMPLETED", (rule, job)
    assert (cluster_run["workdir"] / ".nanochat/report/report.md").is_file()
    nothing = snakemake(cluster_run["workdir"], "-n", "all", *TWIN, *ALL, profile="ptolemy", env=cluster_run["env"])
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    assert cluster_run["hub_requests"][0] == cluster_run["hub_requests"][1], "the rerun downloaded again"


@pytest.mark.slow  # the whole tiny pipeline through SLURM: about 7 minutes on 2 cores
def test_after_a_failed_sft_the_same_command_reruns_sft_its_eval_and_the_report_only(cluster_run):
    first, second = cluster_run["first"], cluster_run["second"]
    sft_jobs = [job for rule, job in first if rule == "chat_sft"]
    assert len(sft_jobs) == TRAINING_JOBS and all(job["JobState"] == "FAILED" for job in sft_jobs)
    for job in sft_jobs:  # the Snakemake inside a job does not retry on its own as well
        log = cluster_run["workdir"] / f".snakemake/slurm_logs/rule_chat_sft/{job['JobId']}.log"
        assert "Trying to restart" not in log.read_text()
    done_first = {rule for rule, job in first if job["JobState"] == "COMPLETED"}
    assert {"base_train", "mid_train", "base_loss", "chat_eval_task"} <= done_first  # keep-going: not held up by SFT
    # SFT and the SFT model's four offline tasks, one job each (and, locally, their aggregate and the report)
    assert sorted(rule for rule, _ in second) == ["chat_eval_task"] * 4 + ["chat_sft"]
    assert "localrule report:" in cluster_run["rerun"].stdout + cluster_run["rerun"].stderr
    assert cluster_run["mid_eval_unchanged"], "the rerun evaluated the midtrained model again"
    assert (cluster_run["workdir"] / ".nanochat/eval/chat_eval_sft.json").is_file()


@pytest.mark.slow  # the whole tiny pipeline through SLURM: about 7 minutes on 2 cores
def test_a_compute_job_whose_data_vanished_names_the_missing_file_within_seconds(cluster_run):
    """A queued base_train job finds a shard deleted (a scratch purge while it waited) on a node without
    internet: it fails at once, naming the file, and downloads nothing."""
    workdir, env = cluster_run["workdir"], {**cluster_run["env"], "HF_ENDPOINT": "http://127.0.0.1:9"}
    shard = workdir / ".nanochat/base_data/fineweb-edu" / shard_name(1)
    (workdir / ".nanochat/base_checkpoints/model.pt").unlink()  # base_train must run again
    hold = subprocess.run(["sbatch", "--parsable", "-p", "gpu-a100", "-c", "16", "-t", "10", "-o", "/dev/null",
                           "--wrap", "sleep 600"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        proc = snakemake(workdir, "base_train", *TWIN, *ALL, profile="ptolemy",
                         env=env, wait=False)
        deadline = time.time() + 120
        while "rule_base_train" not in subprocess.run(["squeue", "-h", "-o", "%k"], capture_output=True,
                                                      text=True).stdout:
            assert proc.poll() is None and time.time() < deadline, "base_train was not submitted"
            time.sleep(0.5)
        shard.unlink()
    finally:
        subprocess.run(["scancel", hold])
    assert proc.wait(timeout=900) != 0  # every retry of base_train fails the same way, in seconds
    assert not (workdir / ".nanochat/base_checkpoints/model.pt").exists()
    output = (workdir / "snakemake.out").read_text()
    jobs = [job for rule, job in submissions(output) if rule == "base_train"]
    assert len(jobs) == TRAINING_JOBS
    # The Snakemake inside the job waits `latency-wait` (15 s) for its inputs, names the missing one, and
    # exits 0 without running the rule (Snakemake 9.27), so SLURM records COMPLETED and the controller
    # reports missing outputs; what matters here is that the job ends in seconds saying which file is gone.
    assert all(hours(job["RunTime"]) * 3600 < 60 for job in jobs), [job["RunTime"] for job in jobs]
    for job in jobs:
        log = (workdir / f".snakemake/slurm_logs/rule_base_train/{job['JobId']}.log").read_text()
        assert re.search(rf"Missing files after \d+ seconds.*\n.*{shard.name} \(missing", log), log[-2000:]


@pytest.mark.slow
def test_the_controller_job_hands_over_to_its_successor_near_its_limit(tmp_path):
    """profiles/ptolemy/controller.sbatch as a SLURM job that submits the rest. The warning SLURM sends it
    before its limit (`--signal=B:USR1@600`, sent here at once with scancel) makes it interrupt Snakemake,
    which cancels the training job (that checkpoints on SIGTERM), and submit the next controller, which
    resubmits the training; that resumes and completes the model."""
    # The twin is one 16-CPU node: the controller's CPU leaves 15 for training (on Ptolemy it sits elsewhere).
    args = [TARGET, "--directory", str(tmp_path), *TWIN, *long_config(0),
            "--set-resources", "base_train:cpus_per_task=15"]
    # On the twin's CPU partition (`devel`), as a cluster's controller belongs: its successor stays there.
    first = subprocess.run(["sbatch", "--parsable", "--partition=devel", f"--output={tmp_path}/controller-%j.out",
                            "profiles/ptolemy/controller.sbatch", *args], cwd=REPO, capture_output=True,
                           text=True, check=True, env=with_venv_path()).stdout.strip()
    steps = tmp_path / ".nanochat/base_checkpoints/steps"
    deadline = time.time() + 300
    while not list(steps.glob("*/step_000050")):  # the training job runs
        assert time.time() < deadline, "the controller's training job made no checkpoint"
        time.sleep(1)
    subprocess.run(["scancel", "--batch", "--signal=USR1", first], check=True)
    deadline = time.time() + 900
    while not (tmp_path / TARGET).is_file() or len(list(tmp_path.glob("controller-*.out"))) < 2 \
            or subprocess.run(["squeue", "-h", "-n", "nanochat-controller"], capture_output=True, text=True).stdout:
        assert time.time() < deadline, "the second controller did not finish the model"
        time.sleep(2)
    first_log, second_log = (p.read_text() for p in sorted(tmp_path.glob("controller-*.out")))
    assert "reaches its time limit" in first_log and "submitted the next controller" in first_log
    assert "Snakemake exited with status 0" in second_log
    assert "on partition devel" in first_log and "on partition devel" in second_log
    [log] = steps.glob("*/train.log")
    stopped = re.search(r"stopped at step (\d+) on SIGTERM", log.read_text()).group(1)
    assert f"step_{int(stopped):06d}" in re.search(r"resuming from (\S+)", log.read_text()).group(1)
    assert len(json.loads((tmp_path / ".nanochat/base_checkpoints/base_train.json").read_text())["history"]) == 1000
