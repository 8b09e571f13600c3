import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nanochat.chat_data import ChatLoader
from nanochat.dataloader import DataLoader
from nanochat.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two shards of numbered documents in row groups of 4 documents, and a tokenizer for them."""
    root = tmp_path_factory.mktemp("corpus")
    docs = [f"document {i}: " + " ".join(f"word{j}" for j in range(i % 7 + 3)) for i in range(48)]
    shards = []
    for s in range(2):
        path = root / f"shard_{s}.parquet"
        pq.write_table(pa.table({"text": docs[s * 24:(s + 1) * 24]}), path, row_group_size=4)
        shards.append(path)
    return shards, Tokenizer.train(docs, vocab_size=300)


def take(loader, n):
    return [loader.next_batch() for _ in range(n)]


def test_restored_state_continues_with_exactly_the_same_tokens(corpus):
    shards, tok = corpus
    straight = DataLoader(shards, tok, B=2, T=8, total_batch=32)
    take(straight, 6)  # 3 steps of 2 micro-batches
    state = straight.state_dict()
    expected = take(straight, 40)  # far enough to wrap around into the next epoch
    resumed = DataLoader(shards, tok, B=2, T=8, total_batch=32, state=state)
    for (x1, y1), (x2, y2) in zip(take(resumed, 40), expected):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_a_step_sees_the_same_data_with_one_or_two_processes(corpus):
    shards, tok = corpus
    single = DataLoader(shards, tok, B=2, T=8, total_batch=64)  # 4 micro-batches per step
    ranks = [DataLoader(shards, tok, B=2, T=8, total_batch=64, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        together = take(ranks[0], 2) + take(ranks[1], 2)
        for (x1, y1), (x2, y2) in zip(take(single, 4), together):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def merged(states: list[dict]) -> dict:
    """The loader state a step checkpoint keeps: the union of every rank's (nanochat.checkpoint)."""
    return {key: value for state in states for key, value in state.items()}


def continues_as_one(ranks: list, single, steps: int) -> None:
    """`single` (1 process, 2 micro-batches per step per former rank) gives, step after step, the batches
    the two processes `ranks` (2 micro-batches each) would have taken."""
    for _ in range(steps):
        together = take(ranks[0], 2) + take(ranks[1], 2)
        for (x1, y1), (x2, y2) in zip(take(single, 4), together):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_the_state_of_two_processes_resumes_one_with_the_same_tokens(corpus):
    shards, tok = corpus
    ranks = [DataLoader(shards, tok, B=2, T=8, total_batch=64, rank=r, world_size=2) for r in range(2)]
    for rank in ranks:
        take(rank, 6)  # 3 steps of 2 micro-batches
    state = merged([rank.state_dict() for rank in ranks])
    assert sorted(state) == [0, 1, 2, 3]  # every stream's position
    continues_as_one(ranks, DataLoader(shards, tok, B=2, T=8, total_batch=64, state=state), steps=12)


def test_the_chat_loaders_state_means_the_same_for_any_number_of_processes(corpus):
    _, tok = corpus
    conversations = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
                     for i in range(40)]
    for pack in (True, False):
        ranks = [ChatLoader(tok, conversations, B=2, T=16, rows_per_step=8, pack=pack, rank=r, world_size=2)
                 for r in range(2)]
        for rank in ranks:
            take(rank, 6)  # 3 steps of 2 micro-batches
        state = merged([rank.state_dict() for rank in ranks])
        assert state == {"steps": 3}
        continues_as_one(ranks, ChatLoader(tok, conversations, B=2, T=16, rows_per_step=8, pack=pack, state=state),
                         steps=5)


def test_targets_are_inputs_shifted_and_documents_start_with_bos(corpus):
    shards, tok = corpus
    x, y = DataLoader(shards, tok, B=2, T=8, total_batch=16).next_batch()
    assert x[0, 0] == tok.bos_id
    assert torch.equal(x.view(-1)[1:], y.view(-1)[:-1])


def test_batch_must_divide_evenly(corpus):
    shards, tok = corpus
    with pytest.raises(SystemExit, match="multiple"):
        DataLoader(shards, tok, B=2, T=8, total_batch=48, world_size=2)
