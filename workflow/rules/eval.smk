# Evaluations, one job per (stage, task): tasks run side by side (on a cluster, on a node's GPUs), a failed
# task reruns alone, and a task added to the list runs without rerunning the others. CORE for the base
# model, the chat tasks for any model (base, mid, sft, rl); then one aggregate record per stage and model.
CORE_TASK_RECORDS = str(EVAL_DIR / "base_eval" / "{task}.json")
CHAT_TASK_RECORDS = str(EVAL_DIR / "chat_eval" / "{model}" / "{task}.json")


rule base_eval_task:
    input:
        model=rules.base_train.output.model,
        meta=rules.base_train.output.meta,
        tokenizer=rules.tok_train.output.tokenizer,
        bundle=download_path("eval_bundle"),
    output:
        record=CORE_TASK_RECORDS,
    params:
        settings=cli("base_eval"),
        model_dir=lambda w, input: os.path.dirname(input.model),
    wildcard_constraints:
        task="|".join(CORE_TASKS),
    threads: 16
    log:
        log_path("base_eval", "{task}"),
    benchmark:
        benchmark_path("base_eval", "{task}")
    shell:
        "python -m nanochat.scripts.base_eval {params.settings} --task={wildcards.task} --bundle_dir={input.bundle}"
        " --model_dir={params.model_dir} --tokenizer={input.tokenizer} --out={output.record} 2> {log}"


rule base_eval:
    localrule: True  # a mean over the task records: seconds, no GPU
    input:
        tasks=expand(CORE_TASK_RECORDS, task=CORE_TASKS) if config["base_eval"]["bundle"] else [],
    output:
        record=str(EVAL_DIR / "base_eval.json"),
    params:
        settings=cli("base_eval"),
    log:
        log_path("base_eval"),
    shell:
        "python -m nanochat.scripts.base_eval {params.settings} --out={output.record} {input.tasks} 2> {log}"


rule chat_eval_task:
    input:
        model=lambda w: str(CKPT[w.model] / "model.pt"),
        meta=lambda w: str(CKPT[w.model] / "meta.json"),
        tokenizer=rules.tok_train.output.tokenizer,
        hub=lambda w: [download_path(CHAT_EVAL_DATA[w.task])] if w.task in CHAT_EVAL_DATA else [],
    output:
        record=CHAT_TASK_RECORDS,
    params:
        settings=cli("chat_eval"),
        model_dir=lambda w, input: os.path.dirname(input.model),
        hub_dir=lambda w: str(HUB_DIR),  # a folder of downloads, none of them when offline
    wildcard_constraints:
        model="|".join(CKPT),
        task="|".join(CHAT_EVAL_TASKS),
    threads: 16
    log:
        log_path("chat_eval", "{model}_{task}"),
    benchmark:
        benchmark_path("chat_eval", "{model}_{task}")
    shell:
        "python -m nanochat.scripts.chat_eval {params.settings} --task={wildcards.task}"
        " --model_dir={params.model_dir} --tokenizer={input.tokenizer} --hub_dir={params.hub_dir}"
        " --out={output.record} 2> {log}"


rule chat_eval:
    localrule: True  # ChatCORE / the chat mean over the task records: seconds, no GPU
    input:
        tasks=expand(CHAT_TASK_RECORDS, task=CHAT_EVAL_TASKS, allow_missing=True),
    output:
        record=str(EVAL_DIR / "chat_eval_{model}.json"),
    params:
        settings=cli("chat_eval"),
    wildcard_constraints:
        model="|".join(CKPT),
    log:
        log_path("chat_eval", "{model}"),
    shell:
        "python -m nanochat.scripts.chat_eval {params.settings} --out={output.record} {input.tasks} 2> {log}"
