"""The data catalog: every external file declared once, pinned where a pin is known, and what reads it."""

import re

from nanochat import catalog, layout
from nanochat.catalog import CATALOG, HubFiles, UrlFile
from nanochat.fetch import check_word_list

# No public pin was found for these (see the catalog's `source`); a new entry must not join them silently.
# words_alpha: its URL is at a commit, no sha256 known
UNPINNED = {"fineweb_edu", "climbmix", "identity", "words_alpha"}


def test_pins_are_commits_and_checksums():
    for name, entry in CATALOG.items():
        pin = entry.revision if isinstance(entry, HubFiles) else entry.sha256
        assert (pin is None) == (name in UNPINNED), name
        if isinstance(entry, HubFiles):
            assert pin is None or re.fullmatch(r"[0-9a-f]{40}", pin), name
            assert entry.patterns and "/" in entry.repo, name
        else:
            assert isinstance(entry, UrlFile) and entry.url.startswith("https://")
            assert pin is None or re.fullmatch(r"[0-9a-f]{64}", pin), name
        assert entry.source, f"{name}: say where the pin comes from"


def test_every_entry_has_one_place_and_a_reader():
    paths = [layout.download_path(name) for name in CATALOG]
    assert len(set(paths)) == len(paths)
    read = {*layout.SHARD_ENTRIES.values(), "eval_bundle", *catalog.CHAT_EVAL_TEST_SETS.values(),
            *(name for stage in catalog.MIXTURES for name in catalog.mixture_entries(stage))}
    assert read == set(CATALOG)


def test_records_describe_the_revision():
    assert CATALOG["gsm8k_test"].describe() == f"hf://datasets/openai/gsm8k@{catalog.GSM8K}"
    assert "not pinned" in CATALOG["fineweb_edu"].describe()


def test_climbmix_validation_is_its_pinned_last_shard_as_upstream():
    assert layout.shard_indices("climbmix", 4) == [0, 1, 2, 6542]
    assert layout.shard_indices("fineweb-edu", 4) == [0, 1, 2, 3]
    assert layout.download_paths(["climbmix"], 3) == [f"base_data/climbmix/shard_{i:05d}.parquet" for i in (0, 1, 6542)]


def test_a_word_list_is_lowercase_words_one_per_line(tmp_path):
    path = tmp_path / "words_alpha.txt"
    for text, error in (("a\r\naa\r\naah\r\n", None), ("", "no words"), ("apple\nBanana\n", "'Banana' is not"),
                        ("<html>404</html>", "'<html>404</html>' is not"), ("caf\u00e9\n", "'café' is not")):
        path.write_text(text)
        result = check_word_list(path)
        assert result is None if error is None else error in result, (text, result)
    path.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in check_word_list(path)
