import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from nanochat.common import sha256sum
from nanochat.dataset import build_offline_shard, iter_texts, offline_documents, verify_parquet, write_shard
from nanochat.fetch import check_hub_file
from nanochat.layout import shard_name


def test_offline_shards_partition_the_corpus(tmp_path):
    paths = [tmp_path / shard_name(i) for i in range(3)]
    for i, path in enumerate(paths):
        build_offline_shard(i, 3, path)
    texts = [t for p in paths for t in pq.read_table(p).column("text").to_pylist()]
    assert sorted(texts) == sorted(offline_documents())
    assert all(verify_parquet(p) is None for p in paths)
    build_offline_shard(1, 3, tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == paths[1].read_bytes()  # deterministic


def test_verify_names_what_is_wrong(tmp_path):
    good = tmp_path / "good.parquet"
    write_shard(["a", "b"], good)
    data = good.read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    write_shard([], tmp_path / "empty.parquet")
    assert verify_parquet(good) is None
    assert "hub reports" in check_hub_file(good, len(data) + 1, None, "text")
    assert "sha256" in check_hub_file(good, len(data), "0" * 64, "text")
    assert check_hub_file(good, len(data), sha256sum(good), "text") is None
    assert "parquet footer" in verify_parquet(tmp_path / "truncated.parquet")
    assert verify_parquet(tmp_path / "empty.parquet") == "no rows"


def test_iter_texts_caps_documents_and_total(tmp_path):
    write_shard(["abcdef", "ghijkl", "mnopqr"], tmp_path / "s.parquet")
    assert list(iter_texts([tmp_path / "s.parquet"], doc_cap=4)) == ["abcd", "ghij", "mnop"]
    assert list(iter_texts([tmp_path / "s.parquet"], max_chars=8, doc_cap=4)) == ["abcd", "ghij"]
    assert list(iter_texts([tmp_path / "s.parquet"], max_chars=7)) == ["abcdef", "g"]


@pytest.mark.parametrize("module, args", [
    ("nanochat.scripts.tok_train", ["--out_dir", "out", "missing_shard.parquet"]),
    ("nanochat.scripts.tok_eval", ["--tokenizer", "t.json", "--train", "missing_shard.parquet",
                                   "--val", "v.parquet", "--out", "o.json"]),
    ("nanochat.scripts.base_eval", ["--task", "copa", "--bundle_dir", "missing_shard.parquet", "--model_dir", "m",
                                    "--tokenizer", "t.json", "--out", "o.json"]),
])
def test_compute_stage_names_missing_input_before_any_work(tmp_path, module, args):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "missing_shard.parquet" in result.stderr
    assert list(tmp_path.iterdir()) == [], "the stage wrote something before checking its inputs"
