# Chat stages: midtraining from the base model, SFT from the midtrained one, optional RL from the SFT
# one (`chat_rl.enabled`; `all` and `report` include it only then). Step checkpoints go to
# <stage>_checkpoints/steps/, not an output, so a failed or killed job resumes from them.


rule mid_train:
    input:
        parent=rules.base_train.output.model,
        tokenizer=rules.tok_train.output.tokenizer,
        mixture=chat_mixture_inputs("mid", "mid_train"),
    output:
        model=str(MID_CKPT / "model.pt"),
        meta=str(MID_CKPT / "meta.json"),
        record=str(MID_CKPT / "mid_train.json"),
    params:
        settings=cli(config["mid_train"]),
    threads: 16
    retries: TRAINING_RETRIES
    log:
        log_path("mid_train"),
    benchmark:
        benchmark_path("mid_train")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.launch nanochat.mid_train {params.settings} {RUNTIME_ARGS}"
        " --parent_dir={BASE_CKPT} --tokenizer={input.tokenizer} --hub_dir={HUB_DIR} --out_dir={MID_CKPT}"
        " --ckpt_dir={MID_CKPT}/steps 2>> {log}"


rule chat_sft:
    input:
        parent=rules.mid_train.output.model,
        tokenizer=rules.tok_train.output.tokenizer,
        mixture=chat_mixture_inputs("sft", "chat_sft"),
    output:
        model=str(SFT_CKPT / "model.pt"),
        meta=str(SFT_CKPT / "meta.json"),
        record=str(SFT_CKPT / "sft_train.json"),
    params:
        settings=cli(config["chat_sft"]),
    threads: 16
    retries: TRAINING_RETRIES
    log:
        log_path("chat_sft"),
    benchmark:
        benchmark_path("chat_sft")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.launch nanochat.chat_sft {params.settings} {RUNTIME_ARGS}"
        " --parent_dir={MID_CKPT} --tokenizer={input.tokenizer} --hub_dir={HUB_DIR} --out_dir={SFT_CKPT}"
        " --ckpt_dir={SFT_CKPT}/steps 2>> {log}"


rule chat_rl:
    input:
        parent=rules.chat_sft.output.model,
        tokenizer=rules.tok_train.output.tokenizer,
        gsm8k=GSM8K_TRAIN,
    output:
        model=str(RL_CKPT / "model.pt"),
        meta=str(RL_CKPT / "meta.json"),
        record=str(RL_CKPT / "rl_train.json"),
    params:
        settings=cli(config["chat_rl"]),
    threads: 16
    retries: TRAINING_RETRIES
    log:
        log_path("chat_rl"),
    benchmark:
        benchmark_path("chat_rl")
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.launch nanochat.chat_rl {params.settings} {RUNTIME_ARGS}"
        " --parent_dir={SFT_CKPT} --tokenizer={input.tokenizer} --gsm8k={input.gsm8k} --out_dir={RL_CKPT}"
        " --ckpt_dir={RL_CKPT}/steps 2>> {log}"
