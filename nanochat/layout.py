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


SHARD_ENTRIES = {"fineweb-edu": "fineweb_edu", "climbmix": "climbmix"}  # downloaded corpus -> its catalog entry
VAL_SHARD_INDEX = {"climbmix": 6542}  # upstream 92d63d4 pins ClimbMix's validation split to its last shard


def shard_indices(source: str, num_shards: int) -> list[int]:
    """The shards a run uses, the last one its validation split: 0..num_shards-1, except where the corpus
    pins its validation shard (ClimbMix: 0..num_shards-2 and 6542)."""
    indices = list(range(num_shards))
    indices[-1] = VAL_SHARD_INDEX.get(source, indices[-1])
    return indices


def download_path(name: str) -> str:
    """Where catalog entry `name` is downloaded to (a pretraining corpus: its shard folder)."""
    corpora = {entry: shard_folder(source) for source, entry in SHARD_ENTRIES.items()}
    special = {**corpora, "eval_bundle": "eval_bundle", "identity": f"{HUB}/{IDENTITY_FILE}",
               "words_alpha": f"{HUB}/{WORDS_FILE}"}
    return special.get(name, f"{HUB}/{name}")


def download_paths(data: list[str], num_shards: int) -> list[str]:
    """Every file or folder the catalog entries `data` are downloaded to (a pretraining corpus: its shards)."""
    sources = {entry: source for source, entry in SHARD_ENTRIES.items()}
    return [path for name in data for path in
            ([f"{shard_folder(sources[name])}/{shard_name(i)}" for i in shard_indices(sources[name], num_shards)]
             if name in sources else [download_path(name)])]
