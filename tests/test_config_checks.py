"""What the workflow refuses as it parses a config (workflow/Snakefile: the schema, then
nanochat.config_checks.problems), checked here in-process on config/config.yaml with one change each; the
whole path through Snakemake is tested in test_workflow.py::test_invalid_config_names_the_key_before_anything_runs."""

import copy

import jsonschema
import pytest
import yaml

from conftest import REPO
from nanochat.config_checks import problems

DEFAULTS = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def changed(**sections: dict) -> dict:
    config = copy.deepcopy(DEFAULTS)
    for section, values in sections.items():
        config[section].update(values)
    return config


def test_the_defaults_and_both_recipes_pass():
    for config in (DEFAULTS, changed(base_train={"recipe": "2026"})):
        jsonschema.validate(config, SCHEMA)
        assert problems(config) == []


def test_a_recipe_that_does_not_exist_is_refused_by_the_schema():
    with pytest.raises(jsonschema.ValidationError, match="'2027' is not one of"):
        jsonschema.validate(changed(base_train={"recipe": "2027"}), SCHEMA)


@pytest.mark.parametrize("sections, named", [
    ({"base_train": {"window_pattern": "SXL"}}, "base_train.window_pattern='SXL'"),
    ({"base_train": {"window_pattern": "SSSL"}}, "the course recipe has no short windows"),
    ({"base_train": {"recipe": "2026", "model_dim": 192}}, "must be a multiple of 128"),  # 2026: head dim 128
    ({"base_train": {"recipe": "2026"}, "runtime": {"checkpoint_every": 0}}, "chat_sft.load_optimizer"),
    ({"chat_sft": {"load_optimizer": 1}, "runtime": {"checkpoint_every": 0}}, "chat_sft.load_optimizer"),
])
def test_settings_the_stages_would_refuse_together_are_named(sections, named):
    config = changed(**sections)
    jsonschema.validate(config, SCHEMA)  # each value is valid alone
    assert any(named in problem for problem in problems(config)), problems(config)


def test_a_2026_sft_that_starts_fresh_needs_no_step_checkpoints():
    assert problems(changed(base_train={"recipe": "2026"}, chat_sft={"load_optimizer": 0},
                            runtime={"checkpoint_every": 0})) == []
