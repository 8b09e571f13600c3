# Paths of every artefact (nanochat.layout, docs/reference/artifacts.md) and helpers shared by rules; the
# downloads this config needs are worked out in downloads.smk.
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from nanochat import layout
from nanochat.catalog import CORE_TASKS
from nanochat.integrity import lost, set_aside_damaged, set_aside_stale_report
from nanochat.retry_guard import refusal

# Jobs run `python -m nanochat...`: find the Python that runs Snakemake (e.g. an unactivated .venv)
# first. Its environment is every job's: there are no per-rule environments (docs/how-to/setup-environment.md).
os.environ.update(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))

BASE = Path(os.path.expandvars(config["workflow"]["base_dir"])).expanduser()
SHARD_DIR = BASE / layout.shard_folder(config["base_data"]["source"])
SHARDS = [str(SHARD_DIR / layout.shard_name(i))
          for i in layout.shard_indices(config["base_data"]["source"], config["base_data"]["num_shards"])]
TRAIN_SHARDS, VAL_SHARD = SHARDS[:-1], SHARDS[-1]
TOKENIZER_DIR = BASE / layout.TOKENIZER
CKPT = {model: BASE / folder for model, folder in layout.CHECKPOINTS.items()}
EVAL_DIR = BASE / layout.EVAL
REPORT_DIR = BASE / layout.REPORT
HUB_DIR = BASE / layout.HUB
EXPORT_DIR = BASE / layout.EXPORT
RL_ENABLED = config["workflow"]["chat_rl"]
# The course recipe midtrains the base model and fine-tunes (SFT) that; the 2026 recipe fine-tunes the base model.
RECIPE = config["base_train"]["recipe"]  # course or 2026 (docs/explanation/recipes.md)
MIDTRAINED = RECIPE == "course"
SFT_PARENT = "mid" if MIDTRAINED else "base"
CHAT_MODELS = ["mid"] * MIDTRAINED + ["sft"] + ["rl"] * RL_ENABLED  # the models `all` and `report` evaluate on the chat tasks
# What the chat tools load: `report` requires it, so that what is lost of it is rebuilt.
REPORTED = [str(TOKENIZER_DIR / "tokenizer.json"), str(TOKENIZER_DIR / "token_bytes.pt")] + [
    str(CKPT[model] / "model.pt") for model in ["base"] + CHAT_MODELS]

# Kept artefacts damaged since their stage wrote them are moved aside, and report.md when some of REPORTED is
# gone, so that `report` rebuilds it (nanochat.integrity). Only the main Snakemake process looks.
if workflow.is_main_process:
    for message in set_aside_damaged([*SHARDS, *REPORTED]):
        logger.warning(message)
    if stale := set_aside_stale_report(REPORT_DIR / "report.md", lost(REPORTED)):
        logger.warning(stale)


def download_path(name: str) -> str:
    return str(BASE / layout.download_path(name))


CHAT_EVAL_TASKS = layout.CHAT_EVAL_TASKS[config["chat_eval"]["source"]]  # one chat_eval job per model and task


def log_path(rule: str, name: str = "") -> str:
    return str(BASE / layout.LOGS / rule / f"{name or rule}.log")


def benchmark_path(rule: str, name: str = "") -> str:
    return str(BASE / layout.BENCHMARKS / rule / f"{name or rule}.tsv")


def cli(section: str) -> str:
    """A config section as its stage's `--key=value` flags (the flags are the section's keys)."""
    return " ".join(f"--{key}={shlex.quote(str(value))}" for key, value in config[section].items())


# A failed training job (time limit, preemption, crash) is started again and resumes from its newest
# step checkpoint, as often as a long run needs (`workflow.training_retries`, default 20: 21 jobs, 10 days
# of 12-hour jobs). A retry that could only repeat a failure is never submitted: after an error no retry can
# fix (an input that does not load, a refused setting, an attempt without progress: nanochat.retry_guard) the
# run stops, naming it (training_attempt below). Only the main Snakemake process retries: inside a SLURM
# job a second Snakemake runs the rule, and a rule's `retries` would apply there too, restarting a job that
# stopped for its time limit inside the same, ending allocation.
TRAINING_RETRIES = config["workflow"]["training_retries"] if workflow.is_main_process else 0


def training_attempt(stage: str):
    """The resource `attempt` of a training rule: Snakemake's attempt number of the job (1, then 2 for its
    first retry, ...), which the rule's shell passes on. Resources are evaluated anew for each attempt, in the
    job too (a param would not be, and a changed param would retrain the model). Before an attempt, the main
    Snakemake process asks whether it may start at all (nanochat.retry_guard): not while an earlier command's
    trainer still trains the stage, not after an error no retry can fix. Else the run stops, saying why."""
    model = next(model for model, trainer in layout.TRAINED_BY.items() if trainer == stage)

    def attempt_number(wildcards, attempt: int) -> int:
        if workflow.is_main_process and (why := refusal(stage, CKPT[model] / "steps", attempt, log_path(stage))):
            raise WorkflowError(why)
        return attempt

    return attempt_number


# SLURM mail: the ptolemy profile passes $NANOCHAT_SLURM_MAIL to sbatch. The address comes from
# config `workflow.email`, else $EMAIL; with neither, no mail flags are sent and the run says so once.
MAIL_USER = config["workflow"]["email"] or os.environ.get("EMAIL", "")
os.environ.update(NANOCHAT_SLURM_MAIL=f"--mail-type=END,FAIL --mail-user={MAIL_USER}" if MAIL_USER else "")


onstart:
    if not MAIL_USER and workflow.non_local_exec:
        logger.warning("No e-mail address (config `workflow.email` or $EMAIL): SLURM jobs will not send END/FAIL mail.")
    if unreachable := unreachable_downloads():  # downloads.smk
        raise WorkflowError(
            "nothing was started: this machine cannot reach the server of " + ", ".join(unreachable) + ". Run the "
            "`download` target first where there is internet (on Ptolemy a devel node: snakemake --profile "
            "profiles/ptolemy download), then this command again.")


# How training runs (config `runtime`): passed to the training rules' shell, never a `param`.
RUNTIME = cli("runtime")
