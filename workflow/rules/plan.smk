# The run's plan (nanochat.scripts.plan), in seconds and without a GPU: sizes, steps, hours on the GPUs the
# profile gives base_train, jobs of its time limit, scratch space, downloads present. Never a job: it runs
# where Snakemake runs, every time it is asked for.
import json

TRAINING_JOB = {name: resource.raw for name, resource in
                dict(workflow.resource_settings.overwrite_resources).get("base_train", {}).items()}
GRES = str(TRAINING_JOB.get("gres") or "").split(":")  # e.g. gpu:a100:8 -> a100 x 8; unset: no GPU declared


rule plan:
    localrule: True
    params:
        sections=json.dumps({section: config[section] for section in
                             ("base_data", "tok_train", "base_train", "mid_train", "chat_sft", "report", "runtime")}),
        gpu=GRES[1] if len(GRES) == 3 else "",
        gpus=int(GRES[-1]) if GRES[-1].isdigit() else 0,
        job_minutes=TRAINING_JOB.get("runtime") or 0,
        base_dir=str(BASE),
        data=DATA,  # the catalog entries this config downloads
    log:
        log_path("plan"),
    shell:
        "python -m nanochat.scripts.plan --sections={params.sections:q} --gpu={params.gpu} --gpus={params.gpus}"
        " --job_minutes={params.job_minutes} --base_dir={params.base_dir} {params.data} 2>&1 | tee {log}"
