# report.md from exactly the records it shows: a changed stage re-renders it from its new record and
# the unchanged others. Annotated for Snakemake's own `--report report.html` too.
from nanochat.report import PLOTS


rule report:
    localrule: True
    input:
        rules.tok_train.output.record,
        rules.tok_eval.output.record,
        rules.base_train.output.record,
        rules.base_loss.output.record,
        rules.base_eval.output.record,
        rules.mid_train.output.record,
        rules.chat_sft.output.record,
        [rules.chat_rl.output.record] * RL_ENABLED,
        expand(rules.chat_eval.output.record, stage=CHAT_STAGES),
    output:
        report=report(str(REPORT_DIR / "report.md"), category="Report"),
        plots=[report(str(REPORT_DIR / name), category="Plots") for name in PLOTS],
    params:
        rl="--rl_enabled" if RL_ENABLED else "",
        hourly_rate=config["report"]["hourly_rate"],
        copy_to="--copy_to=report.md" if config["report"]["copy_to_workdir"] else "",
    log:
        log_path("report"),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m nanochat.report --records_dir={BASE} --out_dir={REPORT_DIR} {params.rl}"
        " --hourly_rate={params.hourly_rate} {params.copy_to} 2> {log}"
