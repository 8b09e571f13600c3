# Pretraining shards, one target per shard so an interrupted download reruns only what is missing.


# fineweb-edu: a download, so a local rule: it runs where Snakemake runs (the devel node on Ptolemy).
rule download_shard:
    localrule: True
    output:
        shard=str(BASE / "base_data" / "fineweb-edu" / "shard_{index}.parquet"),
    params:
        hf_repo=config["data"]["hf_repo"],
        num_shards=config["data"]["num_shards"],
    wildcard_constraints:
        index=r"\d{5}",
    log:
        log_path("download_shard", "shard_{index}"),
    retries: 2
    conda:
        "../envs/data.yaml"
    shell:
        "python -m nanochat.dataset --source=fineweb-edu --hf_repo={params.hf_repo}"
        " --num_shards={params.num_shards} --index=$((10#{wildcards.index})) --out={output.shard} 2> {log}"


# offline: text shipped by installed packages, dealt into shards; no network.
rule offline_shard:
    output:
        shard=str(BASE / "base_data" / "offline" / "shard_{index}.parquet"),
    params:
        num_shards=config["data"]["num_shards"],
    wildcard_constraints:
        index=r"\d{5}",
    log:
        log_path("offline_shard", "shard_{index}"),
    conda:
        "../envs/data.yaml"
    shell:
        "python -m nanochat.dataset --source=offline --num_shards={params.num_shards}"
        " --index=$((10#{wildcards.index})) --out={output.shard} 2> {log}"
