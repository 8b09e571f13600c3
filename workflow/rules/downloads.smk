# The downloads this config needs (catalog entries: nanochat/catalog.py), worked out once: the `download`
# target's files, the rule that fetches each entry, and which of them this machine cannot reach (the onstart
# check in common.smk). The download rules themselves are in data.smk.
from nanochat.catalog import CATALOG, CHAT_EVAL_TEST_SETS, mixture_entries, reachable, source_url

URL_FILES = {layout.IDENTITY_FILE: "identity", layout.WORDS_FILE: "words_alpha"}  # file in hub/ -> catalog entry


# The catalog entries this config reads (nanochat.catalog), by stage.
CHAT_EVAL_DATA = CHAT_EVAL_TEST_SETS if config["chat_eval"]["source"] == "hub" else {}  # task -> its test split


SFT_RECIPE = config["chat_sft"]["recipe"] or RECIPE  # empty: the base model's


def mixture_data(stage: str) -> list[str]:
    """The catalog entries a chat stage's mixture reads: none for the offline mixture."""
    mixture = "chat_sft_2026" if stage == "chat_sft" and SFT_RECIPE == "2026" else stage
    return mixture_entries(mixture) if config[stage]["mixture"] == "hub" else []


# Every catalog entry this config downloads (named in report.md), and their files: the `download` target.
DATA = sorted(
    set(
        [entry for source, entry in layout.SHARD_ENTRIES.items() if source == config["base_data"]["source"]]
        + (["eval_bundle"] if config["base_eval"]["bundle"] else [])
        + list(CHAT_EVAL_DATA.values())
        + (mixture_data("mid_train") if MIDTRAINED else [])
        + mixture_data("chat_sft")
        + ["gsm8k_train"] * RL_ENABLED
    )
)
DOWNLOADS = [str(BASE / path) for path in layout.download_paths(DATA, config["base_data"]["num_shards"])]
SPECIAL_DOWNLOAD_RULES = {"fineweb_edu": "download_shard", "climbmix": "download_shard", "eval_bundle": "download_eval_bundle",
                          **{name: "download_file" for name in URL_FILES.values()}}
DOWNLOAD_RULE = {name: SPECIAL_DOWNLOAD_RULES.get(name, "download_hub") for name in DATA}  # entry -> its rule


def unreachable_downloads() -> list[str]:
    """The downloads this run is about to do whose server this machine cannot reach, e.g. on a GPU node or
    login node without internet, where they would only fail after their retries, hidden by keep-going."""
    rules = {job.rule.name for job in workflow.dag.needrun_jobs()}
    names = [name for name in DATA if DOWNLOAD_RULE[name] in rules]
    sources = {name: source_url(CATALOG[name]) for name in names}
    return [f"{name} ({url})" for name, url in sources.items() if not reachable(url)]
