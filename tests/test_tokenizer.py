import pytest

from nanochat.dataset import offline_documents
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(offline_documents()[:200], vocab_size=600)


def test_numbers_split_into_groups_of_at_most_two_digits(tokenizer):
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("12345")]
    assert "".join(pieces) == "12345" and max(len(p) for p in pieces) <= 2


def test_special_tokens_come_first_and_count_zero_bytes(tokenizer):
    assert [tokenizer.special_id(t) for t in SPECIAL_TOKENS] == list(range(9))
    lengths = tokenizer.token_bytes()
    assert lengths[:9] == [0] * 9 and all(n >= 1 for n in lengths[9:])


def test_round_trip_and_bytes_of_unseen_text(tokenizer):
    text = "Ünïcödé → 東京, emoji 🙂, tabs\t\tand\r\nnewlines"
    ids = tokenizer.encode(text, prepend_bos=True)
    assert ids[0] == tokenizer.bos_id and tokenizer.decode(ids[1:]) == text
    lengths = tokenizer.token_bytes()
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))
    assert list(tokenizer.encode_batch([text, "a"])) == [ids[1:], tokenizer.encode("a")]


def test_save_and_load_give_the_same_encoding(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    text = offline_documents()[500]
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.vocab_size == 600
