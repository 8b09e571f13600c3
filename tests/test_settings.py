"""The settings dataclasses are the single source of truth: schema and reference are generated from them."""

import argparse
import dataclasses

import pytest
import yaml

from nanochat import settings


def test_committed_schema_and_reference_equal_the_generated_ones():
    assert yaml.safe_load(settings.SCHEMA_PATH.read_text()) == settings.json_schema(), \
        "schema is stale: run `python -m nanochat.settings --write`"
    assert settings.REFERENCE_PATH.read_text() == settings.reference_markdown(), \
        "configuration reference is stale: run `python -m nanochat.settings --write`"


def test_every_setting_of_every_section_is_in_schema_and_reference():
    schema, reference = settings.json_schema(), settings.reference_markdown()
    for name, cls in settings.sections().items():
        for f in dataclasses.fields(cls):
            assert schema["properties"][name]["properties"][f.name]["default"] == f.default
            assert f"`{name}.{f.name}`" in reference


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

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Example)
    assert settings.from_args(Example, parser.parse_args(["--steps=3", "--rate=0.25"])) == Example(3, 0.25, "x")
    with pytest.raises(SystemExit, match="--steps=0 is below the minimum 1"):
        settings.from_args(Example, parser.parse_args(["--steps=0"]))


def test_cli_strings_become_typed_values_only_where_they_parse():
    config = {"base_dir": "x", "tokenizer": {"vocab_size": "512", "max_chars": "lots"}, "data": {"num_shards": "4"}}
    settings.coerce_cli_strings(config)
    assert config == {"base_dir": "x", "tokenizer": {"vocab_size": 512, "max_chars": "lots"}, "data": {"num_shards": 4}}
