"""The linters of the test command: ruff over the Python tree, and Snakemake's own lint of the workflow,
clean but for the one deliberate design choice each place names in a comment."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

# The lints kept, by design: `runtime` settings (device, checkpoint/eval/log frequency, wandb) reach the
# training rules' shell outside `params`, so that changing them never retrains a model; and rules name no
# conda environment or container: every job runs in the environment that runs Snakemake, one virtual
# environment on a filesystem the nodes share (docs/how-to/setup-environment.md), which also holds the
# data-only `evals` install that a conda environment's pip section cannot express (`--no-deps`).
RUNTIME = "Shell command directly uses variable RUNTIME from outside of the rule"
NO_CONDA = "Specify a conda environment or container for each rule."


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", ["local", "ptolemy"])
def test_snakemake_lint_is_clean_but_for_the_runtime_flags_and_no_conda_envs(tmp_path, profile):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", f"profiles/{profile}", "--lint",
                             "--directory", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "EMAIL": "student@example.edu", "HOME": str(tmp_path)})
    output = result.stdout + result.stderr
    lints = re.findall(r"^    \* (.*?):?$", output, flags=re.M)
    assert RUNTIME in lints and set(lints) == {RUNTIME, NO_CONDA}, output
    rules_text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for rule, lints_of_rule in re.findall(r"^Lints for rule (\w+)(.*?)(?=^Lints for|\Z)", output, flags=re.M | re.S):
        if RUNTIME not in lints_of_rule:
            continue
        block = rules_text.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert "not a param" in block or "deliberately not a" in block, f"rule {rule}: say why RUNTIME is not a param"
