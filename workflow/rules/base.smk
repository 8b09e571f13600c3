# Base model pretraining and its loss evaluation.
# Step checkpoints go to base_checkpoints/steps/, deliberately not an output: Snakemake deletes a
# failed job's outputs, and those checkpoints are what a retried job resumes from.


rule base_train:
    input:
        shards=TRAIN_SHARDS,
        val=VAL_SHARD,
        tokenizer=rules.tok_train.output.tokenizer,
        token_bytes=rules.tok_train.output.token_bytes,
    output:
        model=str(CKPT["base"] / "model.pt"),
        meta=str(CKPT["base"] / "meta.json"),
        record=str(CKPT["base"] / "base_train.json"),
    params:
        settings=cli("base_train"),
        out_dir=lambda w, output: os.path.dirname(output.model),
    threads: 16
    retries: TRAINING_RETRIES
    resources:
        attempt=training_attempt("base_train"),
    log:
        log_path("base_train"),
    benchmark:
        benchmark_path("base_train")
    shell:
        # {RUNTIME} (config `runtime`: device, checkpoint/eval/log frequency, wandb) is deliberately not a
        # param, here and in every training rule: how a model trains must never retrain it.
        "python -m nanochat.launch nanochat.scripts.base_train {params.settings} {RUNTIME}"
        " --attempt={resources.attempt} --tokenizer={input.tokenizer} --val={input.val}"
        " --out_dir={params.out_dir} --ckpt_dir={params.out_dir}/steps {input.shards} 2>> {log}"


rule base_loss:
    input:
        model=rules.base_train.output.model,
        meta=rules.base_train.output.meta,
        tokenizer=rules.tok_train.output.tokenizer,
        token_bytes=rules.tok_train.output.token_bytes,
        train=TRAIN_SHARDS[0],
        val=VAL_SHARD,
    output:
        record=str(EVAL_DIR / "base_loss.json"),
    params:
        settings=cli("base_loss"),
        model_dir=lambda w, input: os.path.dirname(input.model),
    threads: 16
    log:
        log_path("base_loss"),
    shell:
        "python -m nanochat.scripts.base_loss {params.settings} --model_dir={params.model_dir}"
        " --tokenizer={input.tokenizer} --train={input.train} --val={input.val} --out={output.record} 2> {log}"
