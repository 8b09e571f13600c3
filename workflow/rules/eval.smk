# Evaluations: CORE for the base model, the chat tasks for any stage's model.


# A download, so a local rule (the devel node on Ptolemy).
rule download_eval_bundle:
    localrule: True
    output:
        bundle=directory(str(EVAL_BUNDLE)),
    params:
        url=config["core"]["bundle_url"],
    log:
        log_path("download_eval_bundle"),
    retries: 2
    conda:
        "../envs/data.yaml"
    shell:
        "python -m nanochat.fetch --kind=eval_bundle --url={params.url} --out={output.bundle} 2> {log}"


rule base_eval:
    input:
        model=rules.base_train.output.model,
        meta=rules.base_train.output.meta,
        tokenizer=rules.tok_train.output.tokenizer,
        bundle=rules.download_eval_bundle.output.bundle if config["core"]["bundle_url"] else [],
    output:
        record=str(EVAL_DIR / "base_eval.json"),
    params:
        max_per_task=config["core"]["max_per_task"],
        bundle=str(EVAL_BUNDLE) if config["core"]["bundle_url"] else "none",
    threads: 16
    log:
        log_path("base_eval"),
    benchmark:
        benchmark_path("base_eval")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.base_eval --max_per_task={params.max_per_task} --bundle={params.bundle}"
        " --model_dir={BASE_CKPT} --tokenizer={input.tokenizer} --out={output.record} 2> {log}"


# A hub dataset file (parquet), verified; a download, so a local rule.
rule download_hub_file:
    localrule: True
    output:
        file=str(HUB_DIR / "{owner}" / "{name}" / "{path}"),
    wildcard_constraints:
        owner=r"[^/]+",
        name=r"[^/]+",
        path=r".+\.parquet",
    log:
        log_path("download_hub_file", "{owner}/{name}/{path}"),
    retries: 2
    conda:
        "../envs/data.yaml"
    shell:
        "python -m nanochat.dataset --hf_repo={wildcards.owner}/{wildcards.name} --hub_file={wildcards.path}"
        " --out={output.file} 2> {log}"


# The files of a hub dataset a chat mixture trains on (HUB_CHAT_DATA), verified, as one folder.
rule download_hub_snapshot:
    localrule: True
    output:
        folder=directory(str(HUB_DIR / "snapshots" / "{dataset}")),
    params:
        repo=lambda w: HUB_CHAT_DATA[w.dataset][0],
        patterns=lambda w: " ".join(f"--hub_pattern={shlex.quote(p)}" for p in HUB_CHAT_DATA[w.dataset][1]),
    wildcard_constraints:
        dataset="|".join(HUB_CHAT_DATA),
    log:
        log_path("download_hub_snapshot", "{dataset}"),
    retries: 2
    conda:
        "../envs/data.yaml"
    shell:
        "python -m nanochat.dataset --hf_repo={params.repo} {params.patterns} --out={output.folder} 2> {log}"


# Upstream's identity conversations (a plain HTTPS file), verified; a download, so a local rule.
rule download_identity:
    localrule: True
    output:
        jsonl=str(HUB_DIR / IDENTITY_FILE),
    params:
        url=config["chat_data"]["identity_url"],
    log:
        log_path("download_identity"),
    retries: 2
    conda:
        "../envs/data.yaml"
    shell:
        "python -m nanochat.fetch --kind=conversations --url={params.url} --out={output.jsonl} 2> {log}"


rule chat_eval:
    input:
        model=lambda w: str(STAGE_CKPT[w.stage] / "model.pt"),
        meta=lambda w: str(STAGE_CKPT[w.stage] / "meta.json"),
        tokenizer=rules.tok_train.output.tokenizer,
        hub=CHAT_EVAL_FILES,
    output:
        record=str(EVAL_DIR / "chat_eval_{stage}.json"),
    params:
        settings=cli(config["chat_eval"]),
    wildcard_constraints:
        stage="|".join(STAGE_CKPT),
    threads: 16
    log:
        log_path("chat_eval", "{stage}"),
    benchmark:
        benchmark_path("chat_eval", "{stage}")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.chat_eval {params.settings} --model_dir=$(dirname {input.model})"
        " --tokenizer={input.tokenizer} --hub_dir={HUB_DIR} --out={output.record} 2> {log}"
