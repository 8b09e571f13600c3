# Evaluations: CORE for the base model.


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
        "python -m nanochat.eval_bundle --url={params.url} --out={output.bundle} 2> {log}"


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
