"""bench/recipe_2026.py: the tokenizer both sides share, reading upstream's output, and (slow) a whole small run."""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO
from nanochat.dataset import build_offline_shard, offline_documents
from nanochat.tokenizer import Tokenizer

spec = importlib.util.spec_from_file_location("recipe_2026", REPO / "bench" / "recipe_2026.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_tiktoken_copy_encodes_like_ours(tmp_path):
    pytest.importorskip("tiktoken")
    tokenizer = Tokenizer.train(offline_documents()[:300], 600)
    shard = tmp_path / "shard_00000.parquet"
    build_offline_shard(1, 4, shard)
    encoding = bench.to_tiktoken(tokenizer)
    assert encoding.n_vocab == tokenizer.vocab_size
    assert bench.check_same_ids(tokenizer, encoding, [shard]) > 100_000

    ranks = dict(encoding._mergeable_ranks)
    a, b = [token for token in sorted(ranks, key=ranks.get) if len(token) > 1][:2]  # the first two merges swapped
    ranks[a], ranks[b] = ranks[b], ranks[a]
    other = type(encoding)("other", pat_str=encoding._pat_str, mergeable_ranks=ranks,
                           special_tokens=encoding._special_tokens)
    with pytest.raises(SystemExit, match="differ"):
        bench.check_same_ids(tokenizer, other, [shard])


def test_parse_upstream():
    out = """Step 00000 | Validation bpb: 3.037280
step 00000/00002 (0.00%) | loss: 8.318961 | lrm: 0.03 | dt: 61395.36ms | tok/sec: 133 | bf16_mfu: 0.00 | epoch: 2
step 00001/00002 (50.00%) | loss: 8.317678 | lrm: 0.05 | dt: 1415.36ms | tok/sec: 5,787 | bf16_mfu: 0.00 | epoch: 2
Step 00002 | Validation bpb: 2.989426
"""
    parsed = bench.parse_upstream(out)
    assert parsed["step_s"] == pytest.approx([61.39536, 1.41536])
    assert parsed["bpb"] == {0: 3.03728, 2: 2.989426}


@pytest.mark.slow
def test_small_run(tmp_path):
    """Both parts end to end at a few steps (upstream's part skips, saying so, without the anchor or rustbpe)."""
    out = tmp_path / "recipe_2026.json"
    result = subprocess.run(
        [sys.executable, "bench/recipe_2026.py", "--depths", "4", "--seeds", "42", "43", "--steps", "4",
         "--eval_every", "2", "--eval_tokens", "4096", "--minutes", "0.1", "--calibrate", "3", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert set(record["wall"]["results"]) == {"2026", "course"}
    if "upstream comparison skipped" not in result.stdout:
        d4 = record["upstream"]["d4"]
        assert set(d4["bpb"]) == {"2", "4"}  # the steps both evaluated (upstream also at step 0)
        assert all(len(run["step_s"]) == 4 for runs in d4["runs"].values() for run in runs)
