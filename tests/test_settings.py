"""The settings dataclasses are the single source of truth: schema, commented config and reference are
generated from them; each config section is one stage's settings and becomes that stage's flags."""

import argparse
import contextlib
import dataclasses
import importlib
import io

import pytest
import yaml

from nanochat import configuration, settings


def test_committed_schema_config_and_reference_equal_the_generated_ones():
    for path, text in configuration.generated_files().items():
        assert path.read_text() == text, f"{path.name} is stale: run `python -m nanochat.configuration --write`"


def test_every_setting_of_every_section_is_in_schema_config_and_reference():
    schema, reference = configuration.json_schema(), configuration.reference_markdown()
    config = yaml.safe_load(configuration.config_yaml())
    for name, cls in configuration.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert schema["properties"][name]["properties"][f.name]["default"] == f.default
            assert config[name][f.name] == f.default
            assert f"`{name}.{f.name}`" in reference


@pytest.mark.parametrize("section", [s for s in configuration.SECTIONS if s not in ("workflow", "runtime")])
def test_each_section_is_its_stage_module_flags(section):
    """One name per stage: config section = rule = `python -m nanochat.scripts.<section>`, whose --help lists
    every key of the section as a flag."""
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_code, contextlib.redirect_stdout(out):
        importlib.import_module(f"nanochat.scripts.{section}").main(["--help"])
    assert exit_code.value.code == 0
    help_text = out.getvalue()
    for f in dataclasses.fields(configuration.SECTIONS[section]):
        assert f"--{f.name}" in help_text
    rules = "".join(p.read_text() for p in (configuration.REPO / "workflow" / "rules").glob("*.smk"))
    assert f"rule {section}:" in rules and f'cli("{section}")' in rules


def test_a_setting_without_comment_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        documented: int = 1  # has its comment
        bare: int = 2

    with pytest.raises(ValueError, match="bare"):
        settings.field_comments(Undocumented)


def test_flags_follow_the_dataclass():
    @dataclasses.dataclass
    class Example:
        steps: int = dataclasses.field(default=10, metadata={"minimum": 1})  # how many steps
        rate: float = 0.5  # a rate
        name: str = "x"  # a name
        fast: bool = False  # go fast

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Example)
    assert settings.from_args(Example, parser.parse_args(["--steps=3", "--rate=0.25", "--fast=True"])) == \
        Example(3, 0.25, "x", True)
    with pytest.raises(SystemExit, match="--steps=0 is below the minimum 1"):
        settings.from_args(Example, parser.parse_args(["--steps=0"]))


def test_cli_strings_become_typed_values_only_where_they_parse():
    config = {"workflow": {"base_dir": "x", "chat_rl": "true"}, "tok_train": {"vocab_size": "512", "max_chars": "lots"},
              "base_data": {"num_shards": "4"}}
    settings.coerce_cli_strings(config, configuration.json_schema())
    assert config == {"workflow": {"base_dir": "x", "chat_rl": True},
                      "tok_train": {"vocab_size": 512, "max_chars": "lots"}, "base_data": {"num_shards": 4}}
