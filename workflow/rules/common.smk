# Paths of every artefact (the layout of docs/reference/artifacts.md) and helpers shared by rules.
import shlex
import sys
from pathlib import Path

from nanochat.chat_data import HUB_CHAT_DATA, HUB_MIXTURES, IDENTITY_FILE
from nanochat.tasks import HUB_TASKS, TASKS, hub_path

# Jobs run `python -m nanochat...`: find the Python that runs Snakemake (e.g. an unactivated .venv)
# first. A conda env from --sdm conda is activated inside the job and still comes first.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]

BASE = Path(os.path.expandvars(config["base_dir"])).expanduser()
DATA_DIR = BASE / "base_data" / config["data"]["source"]
SHARDS = [str(DATA_DIR / f"shard_{i:05d}.parquet") for i in range(config["data"]["num_shards"])]
TRAIN_SHARDS, VAL_SHARD = SHARDS[:-1], SHARDS[-1]
TOKENIZER_DIR = BASE / "tokenizer"
BASE_CKPT = BASE / "base_checkpoints"
MID_CKPT = BASE / "mid_checkpoints"
SFT_CKPT = BASE / "sft_checkpoints"
RL_CKPT = BASE / "rl_checkpoints"
RL_ENABLED = config["chat_rl"]["enabled"]
EVAL_DIR = BASE / "eval"
REPORT_DIR = BASE / "report"
EVAL_BUNDLE = BASE / "eval_bundle"
HUB_DIR = BASE / "hub"  # hub datasets as <owner>/<name>/<file>
CHAT_EVAL_FILES = [str(hub_path(HUB_DIR, t)) for t in HUB_TASKS if TASKS[t][3]] \
    if config["chat_eval"]["source"] == "hub" else []
GSM8K_TRAIN = str(HUB_DIR / "openai" / "gsm8k" / "main" / "train-00000-of-00001.parquet")  # RL's questions


def chat_mixture_inputs(stage: str, section: str) -> list[str]:
    """The downloaded dataset folders a chat stage's hub mixture reads (none for the offline mixture)."""
    if config[section]["mixture"] != "hub":
        return []
    return [str(HUB_DIR / "snapshots" / name) for name in HUB_MIXTURES[stage]] + [str(HUB_DIR / IDENTITY_FILE)]


CHAT_MIXTURE_DIRS = sorted(set(chat_mixture_inputs("mid", "mid_train") + chat_mixture_inputs("sft", "chat_sft")))
# Checkpoint folder of each stage a chat evaluation can run on.
STAGE_CKPT = {"base": BASE_CKPT, "mid": MID_CKPT, "sft": SFT_CKPT, "rl": RL_CKPT}
CHAT_STAGES = ["mid", "sft"] + ["rl"] * RL_ENABLED  # the stages `all` and `report` evaluate on the chat tasks
# Every file that needs the network; the `download` target builds exactly these.
DOWNLOADS = (SHARDS if config["data"]["source"] == "fineweb-edu" else []) \
    + ([str(EVAL_BUNDLE)] if config["core"]["bundle_url"] else []) + CHAT_EVAL_FILES \
    + [GSM8K_TRAIN] * RL_ENABLED + CHAT_MIXTURE_DIRS


def log_path(rule: str, name: str = "") -> str:
    return str(BASE / "logs" / rule / f"{name or rule}.log")


def benchmark_path(rule: str, name: str = "") -> str:
    return str(BASE / "benchmarks" / rule / f"{name or rule}.tsv")


def cli(settings: dict) -> str:
    """A config section as the entry point's `--key=value` flags (the flags are the section's keys)."""
    return " ".join(f"--{key}={shlex.quote(str(value))}" for key, value in settings.items())


# A failed training job (time limit, preemption, crash) is started again up to 3 times, and resumes
# from its newest step checkpoint. Only the main Snakemake process retries: inside a SLURM job a second
# Snakemake runs the rule, and a rule's `retries` would apply there too, restarting a job that
# stopped for its time limit inside the same, ending allocation.
TRAINING_RETRIES = 3 if workflow.is_main_process else 0


# How training runs (device, checkpoint/eval/log frequency, wandb): passed to the shell but not a
# `param`, so changing it never retrains a model.
RUNTIME_ARGS = cli(config["runtime"])


# SLURM mail: the ptolemy profile passes $NANOCHAT_SLURM_MAIL to sbatch. The address comes from
# config `email`, else $EMAIL; with neither, no mail flags are sent and the run says so once.
MAIL_USER = config["email"] or os.environ.get("EMAIL", "")
os.environ["NANOCHAT_SLURM_MAIL"] = f"--mail-type=END,FAIL --mail-user={MAIL_USER}" if MAIL_USER else ""


onstart:
    if not MAIL_USER and workflow.non_local_exec:
        logger.warning("No e-mail address (config `email` or $EMAIL): SLURM jobs will not send END/FAIL mail.")
