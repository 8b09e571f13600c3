"""The 2026 recipe's BOS-aligned best-fit batches against upstream 92d63d4 (../shared/anchors), and their resume.

The oracle is upstream's own tokenizing_distributed_data_loader_with_state_bos_bestfit, run in a subprocess
(upstream's folder first on sys.path, so its `nanochat` package is the one imported) over the same parquet shards
in NANOCHAT_BASE_DIR/base_data_climbmix (the last one its validation split), with one and two processes (its
RANK/LOCAL_RANK/WORLD_SIZE variables). Its tokenizer is ours: each document's token ids, computed here by our
Tokenizer, behind upstream's interface (encode(texts, prepend=<bos id>), get_bos_token_id()). The documents are
the offline corpus's chapters cut into pieces of 3 to 300 words, in row groups of 300 (each read as 128 + 128 + 44
documents, as upstream reads them), few enough that the training split wraps into its second epoch.
"""

import json
import os
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO
from nanochat.dataloader import BestFitLoader, DataLoader
from nanochat.dataset import offline_documents
from nanochat.loss_eval import eval_batches
from nanochat.tokenizer import Tokenizer

UPSTREAM = REPO.parent / "shared" / "anchors" / "nanochat-92d63d4"
B, T = 4, 256
TRAIN_BATCHES, VAL_BATCHES, RANK_BATCHES = 60, 12, 30

# Runs upstream's loader for each job (name, split, rank, world size, batches); saves the batches and last state.
RUNNER = r'''
import json, os, sys
upstream, table, out, jobs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, upstream)
import torch
from nanochat.dataloader import tokenizing_distributed_data_loader_with_state_bos_bestfit as bestfit
tokens, bos = json.load(open(table))

class OurTokens:  # our tokenizer's ids behind upstream's tokenizer interface
    def get_bos_token_id(self): return bos
    def encode(self, texts, prepend=None, num_threads=None): return [[prepend] + tokens[t] for t in texts]

results = {}
for name, split, rank, world, n, B, T in jobs:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))  # read at the first batch
    loader = bestfit(OurTokens(), B, T, split, device="cpu")
    xs, ys = [], []
    for _ in range(n):
        x, y, state = next(loader)
        xs.append(x.clone()), ys.append(y.clone())  # upstream refills the same buffers
    results[name] = {"x": torch.stack(xs), "y": torch.stack(ys), "state": state}
torch.save(results, out)
'''


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Three shards (two for training, the last for validation) under a base directory, and our tokenizer."""
    base = tmp_path_factory.mktemp("base")
    data = base / "base_data_climbmix"
    data.mkdir()
    rng, docs = random.Random(0), []
    for chapter in offline_documents()[:400]:
        words = chapter.split(" ")
        while words:
            cut = rng.randint(3, 300)
            docs.append(" ".join(words[:cut]))
            words = words[cut:]
    shards = [data / f"shard_{i:05d}.parquet" for i in range(3)]
    for i, shard in enumerate(shards):
        pq.write_table(pa.table({"text": docs[i * 600:(i + 1) * 600]}), shard, row_group_size=300)
    return {"base": base, "train": shards[:2], "val": shards[2], "docs": docs[:1800],
            "tokenizer": Tokenizer.train(docs, vocab_size=1024)}


@pytest.fixture(scope="module")
def upstream(corpus) -> dict:
    if not (UPSTREAM / "nanochat" / "dataloader.py").is_file():
        pytest.skip(f"upstream nanochat 92d63d4 not found at {UPSTREAM}: the best-fit loader oracle needs "
                    "../shared/anchors")
    tok, base = corpus["tokenizer"], corpus["base"]
    table = base / "tokens.json"
    table.write_text(json.dumps([{doc: tok.encode(doc) for doc in corpus["docs"]}, tok.bos_id]))
    jobs = [("train", "train", 0, 1, TRAIN_BATCHES, B, T), ("val", "val", 0, 1, VAL_BATCHES, B, T),
            ("rank0", "train", 0, 2, RANK_BATCHES, B, T), ("rank1", "train", 1, 2, RANK_BATCHES, B, T)]
    out = base / "upstream.pt"
    subprocess.run([sys.executable, "-c", RUNNER, str(UPSTREAM), str(table), str(out), json.dumps(jobs)],
                   check=True, capture_output=True, env={**os.environ, "NANOCHAT_BASE_DIR": str(base)}, timeout=600)
    return torch.load(out)


def take(loader, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(loader.next_batch() for _ in range(n)), strict=True)
    return torch.stack(xs), torch.stack(ys)


def test_training_batches_equal_upstreams_token_for_token(corpus, upstream):
    x, y = take(BestFitLoader(corpus["train"], corpus["tokenizer"], B, T, B * T), TRAIN_BATCHES)
    theirs = upstream["train"]
    assert theirs["state"]["epoch"] == 2  # the comparison runs past the end of the training split
    assert torch.equal(x, theirs["x"]) and torch.equal(y, theirs["y"])
    assert (x[:, :, 0] == corpus["tokenizer"].bos_id).all()  # every row starts with a document


def test_each_of_two_processes_gets_upstreams_batches(corpus, upstream):
    for rank in range(2):
        loader = BestFitLoader(corpus["train"], corpus["tokenizer"], B, T, 2 * B * T, rank=rank, world_size=2)
        x, y = take(loader, RANK_BATCHES)
        assert torch.equal(x, upstream[f"rank{rank}"]["x"]) and torch.equal(y, upstream[f"rank{rank}"]["y"])


def test_validation_batches_equal_upstreams(corpus, upstream):
    batches = eval_batches(corpus["val"], corpus["tokenizer"], B, T, VAL_BATCHES * B * T, bestfit=True)
    assert len(batches) == VAL_BATCHES and all(t.is_contiguous() for batch in batches for t in batch)
    x, y = (torch.stack(t) for t in zip(*batches, strict=True))
    assert torch.equal(x, upstream["val"]["x"]) and torch.equal(y, upstream["val"]["y"])


def checkpointed(state: dict, tmp_path) -> dict:
    """The state as a step checkpoint gives it back: saved, loaded with weights_only (nanochat.checkpoint)."""
    torch.save({"loader": state}, tmp_path / "training.pt")
    return torch.load(tmp_path / "training.pt", weights_only=True)["loader"]


def test_a_resumed_loader_continues_with_exactly_the_same_batches(corpus, tmp_path):
    shards, tok = corpus["train"], corpus["tokenizer"]
    straight = take(BestFitLoader(shards, tok, B, T, B * T), TRAIN_BATCHES)
    for stop in (1, 17, 45):  # the last one after the wrap into the second epoch
        first = BestFitLoader(shards, tok, B, T, B * T)
        take(first, stop)
        resumed = BestFitLoader(shards, tok, B, T, B * T, state=checkpointed(first.state_dict(), tmp_path))
        x, y = take(resumed, TRAIN_BATCHES - stop)
        assert torch.equal(x, straight[0][stop:]) and torch.equal(y, straight[1][stop:]), stop


def test_two_processes_resume_from_their_joint_state_and_only_on_two(corpus, tmp_path):
    shards, tok = corpus["train"], corpus["tokenizer"]
    ranks = [BestFitLoader(shards, tok, B, T, 2 * B * T, rank=r, world_size=2) for r in range(2)]
    for rank in ranks:
        take(rank, 5)
    state = checkpointed({k: v for rank in ranks for k, v in rank.state_dict().items()}, tmp_path)
    for r, rank in enumerate(ranks):
        resumed = BestFitLoader(shards, tok, B, T, 2 * B * T, rank=r, world_size=2, state=state)
        assert all(torch.equal(a, b) for a, b in zip(take(resumed, 8), take(rank, 8), strict=True))
    with pytest.raises(SystemExit, match="written by 2 processes.*resume it on 2, not 1"):
        BestFitLoader(shards, tok, B, T, B * T, state=state)
    with pytest.raises(SystemExit, match="process 2 of 3 has no row group"):
        BestFitLoader(shards, tok, B, T, 3 * B * T, rank=2, world_size=3)  # 2 row groups per shard
    course = DataLoader(shards, tok, B, T, B * T).state_dict()
    with pytest.raises(SystemExit, match="not the 2026 recipe's best-fit"):
        BestFitLoader(shards, tok, B, T, B * T, state=course)
