# report.md from exactly the records it shows: a changed stage re-renders it from its new record and
# the unchanged others. Annotated for Snakemake's own `--report report.html` too.


rule report:
    localrule: True
    input:
        records=[
            rules.tok_train.output.record,
            rules.tok_eval.output.record,
            rules.base_train.output.record,
            rules.base_loss.output.record,
            rules.base_eval.output.record,
            *[rules.mid_train.output.record] * MIDTRAINED,
            rules.chat_sft.output.record,
            *[rules.chat_rl.output.record] * RL_ENABLED,
            *expand(rules.chat_eval.output.record, model=CHAT_MODELS),
        ],
        reported=REPORTED,  # not read: required so that what is lost of it is rebuilt (common.smk)
    output:
        report=report(str(REPORT_DIR / "report.md"), category="Report"),
        plots=[report(str(REPORT_DIR / name), category="Plots") for name in layout.PLOTS],
    params:
        settings=cli("report"),
        out_dir=lambda w, output: os.path.dirname(output.report),
        data=" ".join(f"--data={name}" for name in DATA),
    log:
        log_path("report"),
    shell:
        "python -m nanochat.scripts.report {params.settings} {params.data} --out_dir={params.out_dir}"
        " {input.records} 2> {log}"
