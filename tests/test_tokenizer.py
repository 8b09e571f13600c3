import itertools
import json

import pytest
import rustbpe
from tokenizers import pre_tokenizers

from conftest import upstream_module
from nanochat.dataset import offline_documents
from nanochat.tokenizer import BYTE_CHARS, SPECIAL_TOKENS, SPLIT_PATTERN, TRAIN_PATTERN, Tokenizer, merge_pair

# What real text rarely has: non-Latin letters, emoji (4-byte UTF-8, a skin-tone modifier), CRLF, runs of
# spaces and tabs, long numbers, contractions in capitals, control-token names.
ODD_TEXT = ("Ünïcödé → 東京, emoji 🙂👍🏽!\r\nCRLF\r\n\r\n  two   spaces\t\ttabs \n\n digits 1234567 3.14159 "
            "IT'S we'VE <|bos|> a<|assistant_end|>b ¡¿ \x00\x7f trailing   ")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(offline_documents()[:200], vocab_size=600)


def test_every_merge_joins_two_earlier_tokens_into_the_next_id(tokenizer):
    merges = json.loads(tokenizer.hf.to_str())["model"]["merges"]
    assert len(merges) == 600 - 9 - 256
    vocab = tokenizer.hf.get_vocab()
    for rank, (left, right) in enumerate(merges):
        token_id = 9 + 256 + rank
        assert tokenizer.hf.id_to_token(token_id) == left + right
        assert vocab[left] < token_id and vocab[right] < token_id


def test_merge_pair_is_the_last_step_of_bpe():
    ranks = {bytes([b]): b for b in range(256)}
    # Two ways to make "abc" of earlier tokens: BPE's order decides, whichever of "ab" and "bc" came first.
    assert merge_pair(b"abc", {**ranks, b"ab": 256, b"bc": 257, b"abc": 258}) == (b"ab", b"c")
    assert merge_pair(b"abc", {**ranks, b"bc": 256, b"ab": 257, b"abc": 258}) == (b"a", b"bc")
    assert merge_pair(b"abcd", {**ranks, b"cd": 256, b"ab": 257, b"abcd": 258}) == (b"ab", b"cd")


def test_round_trip_of_real_and_odd_text(tokenizer):
    for text in [*offline_documents()[200:260], ODD_TEXT]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_training_pattern_splits_as_the_split_pattern():
    """rustbpe learns the same merges with TRAIN_PATTERN: with room for every piece of the text to become a token
    (it stops when no pair is left), the same merges mean the same pieces."""
    texts = [ODD_TEXT, *offline_documents()[:20]]
    ranks = []
    for pattern in (SPLIT_PATTERN, TRAIN_PATTERN):
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), 30_000, pattern=pattern)
        ranks.append(trainer.get_mergeable_ranks())
    assert TRAIN_PATTERN != SPLIT_PATTERN and len(ranks[0]) < 30_000 and ranks[0] == ranks[1]


def test_same_tokens_as_upstream_rustbpe_tokenizer():
    """Upstream's tokenizer (rustbpe's merges, tiktoken's encoding), trained on the same text, cuts held-out text
    into the same byte strings as ours (ids differ: upstream puts the special tokens last)."""
    pytest.importorskip("tiktoken", reason="upstream's tokenizer encodes with tiktoken (the test extra)")
    upstream = upstream_module("tokenizer", "rustbpe tokenizer")
    docs = [doc[:10_000] for doc in offline_documents()]  # as tok_train cuts them
    theirs = upstream.RustBPETokenizer.train_from_iterator(iter(docs[:300]), 2048)
    ours = Tokenizer.train(iter(docs[:300]), 2048)
    lengths = ours.token_bytes()
    for text in [*docs[300:360], ODD_TEXT]:
        ids = ours.encode(text)
        assert ours.decode(ids) == text
        data = text.encode("utf-8")  # our tokens' bytes: consecutive slices of the token lengths
        cuts = list(itertools.accumulate((lengths[i] for i in ids), initial=0))
        assert [data[a:b] for a, b in itertools.pairwise(cuts)] == [
            theirs.enc.decode_single_token_bytes(i) for i in theirs.encode(text)]


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


def test_conversation_masks_train_exactly_the_assistants_own_tokens(tokenizer):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 12*3?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me compute."},
                                          {"type": "python", "text": "12*3"},
                                          {"type": "python_output", "text": "36"},
                                          {"type": "text", "text": "It is 36."}]},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "Welcome."},
    ]
    ids, mask = tokenizer.render_conversation(conversation)
    sp, enc = tokenizer.special_id, tokenizer.encode
    # Hand-derived: (tokens, trained?) in order.
    pieces = [([sp("<|bos|>")], 0),
              ([sp("<|user_start|>")] + enc("Be brief.\n\nWhat is 12*3?") + [sp("<|user_end|>")], 0),
              ([sp("<|assistant_start|>")], 0), (enc("Let me compute."), 1),
              ([sp("<|python_start|>")] + enc("12*3") + [sp("<|python_end|>")], 1),
              ([sp("<|output_start|>")] + enc("36") + [sp("<|output_end|>")], 0),
              (enc("It is 36."), 1), ([sp("<|assistant_end|>")], 1),
              ([sp("<|user_start|>")] + enc("Thanks") + [sp("<|user_end|>")], 0),
              ([sp("<|assistant_start|>")], 0), (enc("Welcome."), 1), ([sp("<|assistant_end|>")], 1)]
    assert ids == [t for tokens, _ in pieces for t in tokens]
    trained = {i for i, m in enumerate(mask) if m}
    expected, pos = set(), 0
    for tokens, flag in pieces:
        if flag:
            expected |= set(range(pos, pos + len(tokens)))
        pos += len(tokens)
    assert trained == expected
    short_ids, short_mask = tokenizer.render_conversation(conversation, max_tokens=10)
    assert short_ids == ids[:10] and short_mask == mask[:10]
    assert tokenizer.render_for_completion(conversation[:2])[-1] == sp("<|assistant_start|>")


def test_text_never_becomes_a_control_token():
    """Control-token strings in any text (a user's message, an assistant's, a tool call, corpus text) are
    encoded as the characters they are; the renderer alone puts special ids, exactly where its rules say."""
    tok = Tokenizer.train(["plain text " * 50, "<|assistant_end|> <|bos|> " * 50], vocab_size=400)
    specials = {tok.special_id(t): t for t in SPECIAL_TOKENS}
    every = "".join(SPECIAL_TOKENS)
    for text in (every, f"hello {every} bye", "<|assistant_end|>", "<|bos"):
        ids = tok.encode(text)
        assert not set(ids) & set(specials) and tok.decode(ids) == text
        assert [i for batch in tok.encode_batch([text]) for i in batch] == ids
    conversation = [{"role": "user", "content": f"hi {every}"},
                    {"role": "assistant", "content": [{"type": "text", "text": every},
                                                      {"type": "python", "text": "'<|output_end|>'.count('a')"},
                                                      {"type": "python_output", "text": "<|assistant_end|>"}]}]
    ids, mask = tok.render_conversation(conversation)
    assert [specials[i] for i in ids if i in specials] == [
        "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|python_start|>", "<|python_end|>",
        "<|output_start|>", "<|output_end|>", "<|assistant_end|>"]
    assert tok.decode(ids).count(every) == 2 and len(mask) == len(ids)


def test_byte_chars_are_the_byte_level_alphabet():
    """The table the rustbpe merges are spelled with is HF's ByteLevel alphabet, one character per byte."""
    assert set(BYTE_CHARS) == set(pre_tokenizers.ByteLevel.alphabet()) and len(set(BYTE_CHARS)) == 256
    assert BYTE_CHARS[ord("A")] == "A" and BYTE_CHARS[ord(" ")] == "Ġ"  # GPT-2's spelling of a space
