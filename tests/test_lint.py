"""The linters of the test command: ruff over the Python tree, and Snakemake's own lint of the workflow,
clean but for the one deliberate design choice each place names in a comment."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

# The one lint kept, by design: `runtime` settings (device, checkpoint/eval/log frequency, wandb) reach the
# training rules' shell outside `params`, so that changing them never retrains a model.
DELIBERATE = "Shell command directly uses variable RUNTIME from outside of the rule"


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", ["local", "ptolemy"])
def test_snakemake_lint_is_clean_but_for_the_runtime_flags(tmp_path, profile):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", f"profiles/{profile}", "--lint",
                             "--directory", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "EMAIL": "student@example.edu", "HOME": str(tmp_path)})
    output = result.stdout + result.stderr
    lints = re.findall(r"^    \* (.*?):?$", output, flags=re.M)
    assert lints and set(lints) == {DELIBERATE}, output
    rules_text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for rule in re.findall(r"^Lints for rule (\w+)", output, flags=re.M):
        block = rules_text.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert "not a param" in block or "deliberately not a" in block, f"rule {rule}: say why RUNTIME is not a param"
