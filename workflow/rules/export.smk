# A model (base, mid, sft, rl) as a Hugging Face transformers folder, export/<model>/, which transformers
# loads with its own NanoChat classes (the course recipe) or, for a 2026-recipe model, with the modeling file
# the folder carries (trust_remote_code); the stage checks the folder's logits against ours before writing it.


rule export:
    input:
        model=lambda w: str(CKPT[w.model] / "model.pt"),
        meta=lambda w: str(CKPT[w.model] / "meta.json"),
        tokenizer=rules.tok_train.output.tokenizer,
    output:
        config=str(EXPORT_DIR / "{model}" / "config.json"),
        weights=str(EXPORT_DIR / "{model}" / "model.safetensors"),
        generation_config=str(EXPORT_DIR / "{model}" / "generation_config.json"),
        tokenizer=str(EXPORT_DIR / "{model}" / "tokenizer.json"),
        tokenizer_config=str(EXPORT_DIR / "{model}" / "tokenizer_config.json"),
        record=str(EXPORT_DIR / "{model}" / "export.json"),
        modeling=[str(EXPORT_DIR / "{model}" / "hf_nanochat_2026.py")] if RECIPE == "2026" else [],  # its model code
    params:
        settings=cli("export"),
        model_dir=lambda w, input: os.path.dirname(input.model),
        out_dir=lambda w, output: os.path.dirname(output.config),
    wildcard_constraints:
        model="|".join(CKPT),
    threads: 4
    log:
        log_path("export", "{model}"),
    shell:
        "python -m nanochat.scripts.export {params.settings} --model_dir={params.model_dir}"
        " --tokenizer={input.tokenizer} --out={params.out_dir} 2> {log}"
