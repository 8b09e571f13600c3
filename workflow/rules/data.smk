# Every download (the catalog entries: nanochat/catalog.py) and the offline pretraining shards.
# Downloads are local rules: they run where Snakemake runs (the devel node with internet on Ptolemy).
import re

from nanochat.catalog import CHAT_EVAL_TEST_SETS, MIXTURES


# A pretraining corpus (fineweb-edu, climbmix): one job per shard, so an interrupted download reruns only what
# is missing.
rule download_shard:
    localrule: True
    output:
        shard=str(BASE / layout.shard_folder("{source}") / "shard_{index}.parquet"),
    params:
        entry=lambda w: layout.SHARD_ENTRIES[w.source],
    wildcard_constraints:
        source="|".join(layout.SHARD_ENTRIES),
        index=r"\d{5}",
    log:
        log_path("download_shard", "{source}/shard_{index}"),
    retries: 2
    shell:
        "python -m nanochat.scripts.download {params.entry} --index=$((10#{wildcards.index})) --out={output.shard}"
        " 2> {log}"


# A hub dataset's files (chat evaluation sets, chat mixtures), verified, as one folder.
rule download_hub:
    localrule: True
    output:
        folder=directory(str(BASE / layout.HUB / "{name}")),
    wildcard_constraints:
        name="|".join(list(CHAT_EVAL_TEST_SETS.values()) + sorted({n for names in MIXTURES.values() for n in names})),
    log:
        log_path("download_hub", "{name}"),
    retries: 2
    shell:
        "python -m nanochat.scripts.download {wildcards.name} --out={output.folder} 2> {log}"


rule download_eval_bundle:
    localrule: True
    output:
        bundle=directory(download_path("eval_bundle")),
    log:
        log_path("download_eval_bundle"),
    retries: 2
    shell:
        "python -m nanochat.scripts.download eval_bundle --out={output.bundle} 2> {log}"


# A single file from a URL: upstream's identity conversations, the spelling tasks' word list.
rule download_file:
    localrule: True
    output:
        file=str(BASE / layout.HUB / "{file}"),
    params:
        name=lambda w: URL_FILES[w.file],
    wildcard_constraints:
        file="|".join(re.escape(file) for file in URL_FILES),
    log:
        log_path("download_file", "{file}"),
    retries: 2
    shell:
        "python -m nanochat.scripts.download {params.name} --out={output.file} 2> {log}"


# offline: text shipped by installed packages, dealt into shards; no network.
rule base_data:
    output:
        shard=str(BASE / layout.shard_folder("offline") / "shard_{index}.parquet"),
    params:
        settings=cli("base_data"),
    wildcard_constraints:
        index=r"\d{5}",
    log:
        log_path("base_data", "shard_{index}"),
    shell:
        "python -m nanochat.scripts.base_data {params.settings} --index=$((10#{wildcards.index}))"
        " --out={output.shard} 2> {log}"
