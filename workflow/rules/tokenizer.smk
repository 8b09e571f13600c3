# Tokenizer training on the first training shards, and its compression on the validation shard.


rule tok_train:
    input:
        shards=TRAIN_SHARDS[: config["tok_train"]["num_shards"]],  # only these: it starts while the rest downloads
    output:
        tokenizer=str(TOKENIZER_DIR / "tokenizer.json"),
        token_bytes=str(TOKENIZER_DIR / "token_bytes.pt"),
        record=str(TOKENIZER_DIR / "tok_train.json"),
    params:
        settings=cli("tok_train"),
        out_dir=lambda w, output: os.path.dirname(output.tokenizer),
    threads: 8
    log:
        log_path("tok_train"),
    benchmark:
        benchmark_path("tok_train")
    shell:
        "RAYON_NUM_THREADS={threads} python -m nanochat.scripts.tok_train {params.settings}"
        " --out_dir={params.out_dir} {input.shards} 2> {log}"


rule tok_eval:
    input:
        tokenizer=rules.tok_train.output.tokenizer,
        train=TRAIN_SHARDS[0],
        val=VAL_SHARD,
    output:
        record=str(TOKENIZER_DIR / "tok_eval.json"),
    params:
        settings=cli("tok_eval"),
    log:
        log_path("tok_eval"),
    shell:
        "python -m nanochat.scripts.tok_eval {params.settings} --tokenizer={input.tokenizer}"
        " --train={input.train} --val={input.val} --out={output.record} 2> {log}"
