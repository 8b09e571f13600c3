# Evaluations: CORE for the base model, the chat tasks for any model (base, mid, sft, rl).


rule base_eval:
    input:
        model=rules.base_train.output.model,
        meta=rules.base_train.output.meta,
        tokenizer=rules.tok_train.output.tokenizer,
        bundle=download_path("eval_bundle") if config["base_eval"]["bundle"] else [],
    output:
        record=str(EVAL_DIR / "base_eval.json"),
    params:
        settings=cli("base_eval"),
        model_dir=lambda w, input: os.path.dirname(input.model),
        bundle_dir=lambda w: download_path("eval_bundle"),  # read only when base_eval.bundle is true
    threads: 16
    log:
        log_path("base_eval"),
    benchmark:
        benchmark_path("base_eval")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.scripts.base_eval {params.settings} --bundle_dir={params.bundle_dir}"
        " --model_dir={params.model_dir} --tokenizer={input.tokenizer} --out={output.record} 2> {log}"


rule chat_eval:
    input:
        model=lambda w: str(CKPT[w.model] / "model.pt"),
        meta=lambda w: str(CKPT[w.model] / "meta.json"),
        tokenizer=rules.tok_train.output.tokenizer,
        hub=[download_path(name) for name in CHAT_EVAL_DATA],
    output:
        record=str(EVAL_DIR / "chat_eval_{model}.json"),
    params:
        settings=cli("chat_eval"),
        model_dir=lambda w, input: os.path.dirname(input.model),
        hub_dir=lambda w: str(HUB_DIR),  # a folder of downloads, none of them when offline
    wildcard_constraints:
        model="|".join(CKPT),
    threads: 16
    log:
        log_path("chat_eval", "{model}"),
    benchmark:
        benchmark_path("chat_eval", "{model}")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.scripts.chat_eval {params.settings} --model_dir={params.model_dir}"
        " --tokenizer={input.tokenizer} --hub_dir={params.hub_dir} --out={output.record} 2> {log}"
