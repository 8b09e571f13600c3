import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from nanochat.dataset import build_offline_shard, iter_texts, offline_documents, shard_name, verify_shard, write_shard


def test_offline_shards_partition_the_corpus(tmp_path):
    paths = [tmp_path / shard_name(i) for i in range(3)]
    for i, path in enumerate(paths):
        build_offline_shard(i, 3, path)
    texts = [t for p in paths for t in pq.read_table(p).column("text").to_pylist()]
    assert sorted(texts) == sorted(offline_documents())
    assert all(verify_shard(p) is None for p in paths)
    build_offline_shard(1, 3, tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == paths[1].read_bytes()  # deterministic


def test_verify_shard_names_what_is_wrong(tmp_path):
    good = tmp_path / "good.parquet"
    write_shard(["a", "b"], good)
    data = good.read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    write_shard([], tmp_path / "empty.parquet")
    assert verify_shard(good) is None
    assert "hub reports" in verify_shard(good, expected_size=len(data) + 1)
    assert "parquet footer" in verify_shard(tmp_path / "truncated.parquet")
    assert verify_shard(tmp_path / "empty.parquet") == "no rows"


def test_iter_texts_caps_documents_and_total(tmp_path):
    write_shard(["abcdef", "ghijkl", "mnopqr"], tmp_path / "s.parquet")
    assert list(iter_texts([tmp_path / "s.parquet"], doc_cap=4)) == ["abcd", "ghij", "mnop"]
    assert list(iter_texts([tmp_path / "s.parquet"], max_chars=8, doc_cap=4)) == ["abcd", "ghij"]
    assert list(iter_texts([tmp_path / "s.parquet"], max_chars=7)) == ["abcdef", "g"]


@pytest.mark.parametrize("module, args", [
    ("nanochat.tok_train", ["--out_dir", "out", "missing_shard.parquet"]),
    ("nanochat.tok_eval", ["--tokenizer", "t.json", "--train", "missing_shard.parquet", "--val", "v.parquet",
                           "--out", "o.json"]),
    ("nanochat.base_eval", ["--bundle", "missing_shard.parquet", "--model_dir", "m", "--tokenizer", "t.json",
                            "--out", "o.json"]),
])
def test_compute_stage_names_missing_input_before_any_work(tmp_path, module, args):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "missing_shard.parquet" in result.stderr
    assert list(tmp_path.iterdir()) == [], "the stage wrote something before checking its inputs"
