"""Where every artefact goes, relative to the workflow's base_dir (docs/reference/artifacts.md).
A leaf module: the Snakefile, the report and the chat tools read it."""

TOKENIZER = "tokenizer"  # tokenizer.json, token_bytes.pt and the tokenizer records
EVAL = "eval"  # records of the evaluations
REPORT = "report"  # report.md and its plots
HUB = "hub"  # hub datasets, one folder per catalog entry
EXPORT = "export"  # one Hugging Face transformers folder per exported model: export/<model>/
IDENTITY_FILE = "identity_conversations.jsonl"  # in the hub folder
WORDS_FILE = "words_alpha.txt"  # in the hub folder: the hub mixtures' spelling words
LOGS, BENCHMARKS = "logs", "benchmarks"
# Final checkpoint folder of each model (step checkpoints in <folder>/steps/), and the stage that trains it.
CHECKPOINTS = {"base": "base_checkpoints", "mid": "mid_checkpoints", "sft": "sft_checkpoints", "rl": "rl_checkpoints"}
TRAINED_BY = {"base": "base_train", "mid": "mid_train", "sft": "chat_sft", "rl": "chat_rl"}
# The chat tasks evaluated per source, one chat_eval job each (nanochat.tasks has their data and grading);
# the record of a model names the others as not available there.
CHAT_EVAL_TASKS = {"hub": ["arc_easy", "arc_challenge", "mmlu", "gsm8k", "humaneval", "spellingbee"],
                   "offline": ["mmlu", "humaneval", "spellingbee", "quartz"]}
PLOTS = ["loss.png", "validation.png", "lr.png", "throughput.png"]  # beside report.md


def shard_folder(source: str) -> str:
    return f"base_data/{source}"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def download_path(name: str) -> str:
    """Where catalog entry `name` is downloaded to (fineweb_edu: the shard folder)."""
    special = {"fineweb_edu": shard_folder("fineweb-edu"), "eval_bundle": "eval_bundle",
               "identity": f"{HUB}/{IDENTITY_FILE}", "words_alpha": f"{HUB}/{WORDS_FILE}"}
    return special.get(name, f"{HUB}/{name}")


def download_paths(data: list[str], num_shards: int) -> list[str]:
    """Every file or folder the catalog entries `data` are downloaded to (fineweb_edu: its first num_shards)."""
    return [path for name in data for path in
            ([f"{shard_folder('fineweb-edu')}/{shard_name(i)}" for i in range(num_shards)] if name == "fineweb_edu"
             else [download_path(name)])]
