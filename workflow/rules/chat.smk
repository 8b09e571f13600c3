# Chat stages: midtraining from the base model, SFT from the midtrained one (the 2026 recipe: SFT from the
# base model, no midtraining), optional RL from the SFT one (`workflow.chat_rl`; `all` and `report`
# include it only then). Step checkpoints go to
# <model>_checkpoints/steps/, not an output, so a failed or killed job resumes from them.


rule mid_train:
    input:
        parent=rules.base_train.output.model,
        tokenizer=rules.tok_train.output.tokenizer,
        mixture=[download_path(name) for name in mixture_data("mid_train")],
    output:
        model=str(CKPT["mid"] / "model.pt"),
        meta=str(CKPT["mid"] / "meta.json"),
        record=str(CKPT["mid"] / "mid_train.json"),
    params:
        settings=cli("mid_train"),
        parent_dir=lambda w, input: os.path.dirname(input.parent),
        out_dir=lambda w, output: os.path.dirname(output.model),
        hub_dir=lambda w: str(HUB_DIR),  # a folder of downloads, none of them when offline
    threads: 16
    retries: TRAINING_RETRIES
    resources:
        attempt=training_attempt("mid_train"),
    log:
        log_path("mid_train"),
    benchmark:
        benchmark_path("mid_train")
    shell:
        # {RUNTIME} is not a param on purpose: how a model trains must never retrain it (base.smk).
        "python -m nanochat.launch nanochat.scripts.mid_train {params.settings} {RUNTIME} --attempt={resources.attempt}"
        " --parent_dir={params.parent_dir} --tokenizer={input.tokenizer} --hub_dir={params.hub_dir}"
        " --out_dir={params.out_dir} --ckpt_dir={params.out_dir}/steps 2>> {log}"


rule chat_sft:
    input:
        parent=str(CKPT[SFT_PARENT] / "model.pt"),
        tokenizer=rules.tok_train.output.tokenizer,
        mixture=[download_path(name) for name in mixture_data("chat_sft")],
    output:
        model=str(CKPT["sft"] / "model.pt"),
        meta=str(CKPT["sft"] / "meta.json"),
        record=str(CKPT["sft"] / "chat_sft.json"),
    params:
        settings=cli("chat_sft"),
        parent_dir=lambda w, input: os.path.dirname(input.parent),
        out_dir=lambda w, output: os.path.dirname(output.model),
        hub_dir=lambda w: str(HUB_DIR),  # a folder of downloads, none of them when offline
    threads: 16
    retries: TRAINING_RETRIES
    resources:
        attempt=training_attempt("chat_sft"),
    log:
        log_path("chat_sft"),
    benchmark:
        benchmark_path("chat_sft")
    shell:
        # {RUNTIME} is not a param on purpose: how a model trains must never retrain it (base.smk).
        "python -m nanochat.launch nanochat.scripts.chat_sft {params.settings} {RUNTIME} --attempt={resources.attempt}"
        " --parent_dir={params.parent_dir} --tokenizer={input.tokenizer} --hub_dir={params.hub_dir}"
        " --out_dir={params.out_dir} --ckpt_dir={params.out_dir}/steps 2>> {log}"


rule chat_rl:
    input:
        parent=rules.chat_sft.output.model,
        tokenizer=rules.tok_train.output.tokenizer,
        gsm8k=download_path("gsm8k_train"),
    output:
        model=str(CKPT["rl"] / "model.pt"),
        meta=str(CKPT["rl"] / "meta.json"),
        record=str(CKPT["rl"] / "chat_rl.json"),
    params:
        settings=cli("chat_rl"),
        parent_dir=lambda w, input: os.path.dirname(input.parent),
        out_dir=lambda w, output: os.path.dirname(output.model),
    threads: 16
    retries: TRAINING_RETRIES
    resources:
        attempt=training_attempt("chat_rl"),
    log:
        log_path("chat_rl"),
    benchmark:
        benchmark_path("chat_rl")
    shell:
        # {RUNTIME} is not a param on purpose: how a model trains must never retrain it (base.smk).
        "python -m nanochat.launch nanochat.scripts.chat_rl {params.settings} {RUNTIME} --attempt={resources.attempt}"
        " --parent_dir={params.parent_dir} --tokenizer={input.tokenizer} --gsm8k={input.gsm8k}"
        " --out_dir={params.out_dir} --ckpt_dir={params.out_dir}/steps 2>> {log}"
