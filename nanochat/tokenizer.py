"""Byte-level BPE tokenizer: trained with rustbpe (as upstream nanochat), used through HF `tokenizers`, with
upstream's split pattern and special tokens.

Text never becomes a control token: `encode` treats "<|assistant_end|>" in a user's message, a corpus or a
dataset as the characters it is (upstream's `encode_ordinary`). Only the conversation renderer inserts
special tokens, by id.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

import rustbpe
from tokenizers import Regex, decoders, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from nanochat.common import read_input

SPECIAL_TOKENS = [
    "<|bos|>",  # starts every document; also the document delimiter in packed rows
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",  # the assistant calls the python (calculator) tool
    "<|output_start|>", "<|output_end|>",  # the tool's output, fed back to the assistant
]

# GPT-4's split pattern, except numbers split into groups of 1-2 digits (not 1-3): fewer tokens
# are spent on number merges, which a small vocabulary cannot afford.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
# SPLIT_PATTERN's splits, written for rustbpe's regex engine (fancy-regex), which runs look-arounds and possessive
# quantifiers itself and hands the rest to the fast regex crate: here all but the whitespace look-ahead, in one
# group (ordered alternatives group freely), possessive quantifiers made greedy (nothing after them can fail, so
# they never give back). Splitting and counting take half the CPU time (0.18 against 0.35 s on the offline text).
TRAIN_PATTERN = (r"""(?:'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n])|\s+(?!\S)|\s+""")


# GPT-2's byte-to-character table, which HF's ByteLevel pre-tokenizer spells bytes with: printable Latin-1
# bytes stand for themselves, the 68 others, in byte order, for the characters from U+0100 on.
_PRINTABLE = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
_OTHERS = [byte for byte in range(256) if byte not in _PRINTABLE]
BYTE_CHARS = [chr(byte) if byte in _PRINTABLE else chr(256 + _OTHERS.index(byte)) for byte in range(256)]


def byte_level(token: bytes) -> str:
    """A token's bytes as HF's ByteLevel vocabulary spells them."""
    return "".join([BYTE_CHARS[byte] for byte in token])


def merge_pair(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two tokens whose merge made `token`, which a rank table (rustbpe's, tiktoken's) leaves implicit: BPE
    on the token's bytes, lowest-ranked pair first (leftmost on ties), stopped before the last merge."""
    rank = ranks[token]
    splits = [i for i in range(1, len(token)) if max(ranks.get(token[:i], rank), ranks.get(token[i:], rank)) < rank]
    if len(splits) == 1:  # one way to make it of two earlier tokens (most tokens): no need to run BPE
        return token[:splits[0]], token[splits[0]:]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        ranked = [ranks.get(parts[i] + parts[i + 1], len(ranks)) for i in range(len(parts) - 1)]
        i = ranked.index(min(ranked))
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


class Tokenizer:
    """Thin wrapper: encode/decode plain text, look up special tokens, save/load `tokenizer.json`."""

    def __init__(self, hf: HFTokenizer):
        self.hf = hf  # decodes every id, special ones to their names
        # The same model without the added (special) tokens: "<|bos|>" in text is split and merged like any
        # other text.
        self.ordinary = HFTokenizer(hf.model)
        self.ordinary.normalizer, self.ordinary.pre_tokenizer = hf.normalizer, hf.pre_tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "Tokenizer":
        """BPE merges learnt by rustbpe, upstream's trainer (faster than HF's BpeTrainer: issue 27), in an HF
        tokenizer laid out as HF's trainer lays it out: the special tokens at ids 0-8, the 256 byte characters,
        then the merged tokens in the order they were learnt. rustbpe reads `texts` a buffer of documents at a
        time (memory stays bounded however long the stream) and logs its progress to the `rustbpe` logger."""
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(texts, vocab_size - len(SPECIAL_TOKENS), pattern=TRAIN_PATTERN)
        ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
        vocab = {token: token_id for token_id, token in enumerate(SPECIAL_TOKENS)}
        for char in sorted(BYTE_CHARS):
            vocab[char] = len(vocab)
        merges = []
        for token in sorted((t for t, rank in ranks.items() if rank >= 256), key=ranks.__getitem__):
            left, right = merge_pair(token, ranks)
            merges.append((byte_level(left), byte_level(right)))
            vocab[byte_level(token)] = len(vocab)
        hf = HFTokenizer(BPE(vocab, merges, byte_fallback=True, unk_token=None, fuse_unk=False))
        hf.normalizer = None
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern=Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens(SPECIAL_TOKENS)  # already in the vocabulary: marks them special, ids unchanged
        return cls(hf)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        return cls(read_input(path, lambda p: HFTokenizer.from_file(str(p))))

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def special_id(self, token: str) -> int:
        token_id = self.hf.token_to_id(token)
        if token_id is None:
            raise KeyError(f"{token} is not a special token of this tokenizer")
        return token_id

    @property
    def bos_id(self) -> int:
        return self.special_id("<|bos|>")

    def encode(self, text: str, prepend_bos: bool = False) -> list[int]:
        ids = self.ordinary.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if prepend_bos else ids

    def encode_batch(self, texts: list[str], prepend_bos: bool = False) -> Iterator[list[int]]:
        for encoding in self.ordinary.encode_batch_fast(texts, add_special_tokens=False):
            yield [self.bos_id] + encoding.ids if prepend_bos else encoding.ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def render_conversation(self, messages: list[dict], max_tokens: int = 2048) -> tuple[list[int], list[int]]:
        """Tokens of a whole conversation and a mask: 1 where the model is trained to produce the token.

        Trained (1): the assistant's text, its python tool calls (<|python_start|>..<|python_end|>) and
        <|assistant_end|>. Not trained (0): <|bos|>, user turns, <|assistant_start|>, and tool output
        (<|output_start|>..<|output_end|>), which the tool, not the model, writes. An assistant message is a
        string or a list of parts {"type": "text" | "python" | "python_output", "text": ...}. A system
        message is merged into the first user message. Cut to `max_tokens`.
        """
        ids, mask = [self.bos_id], [0]

        def add(tokens: list[int], trained: int) -> None:
            ids.extend(tokens)
            mask.extend([trained] * len(tokens))

        for message in self._merge_system(messages):
            if message["role"] == "user":
                add([self.special_id("<|user_start|>"), *self.encode(message["content"]),
                     self.special_id("<|user_end|>")], 0)
                continue
            add([self.special_id("<|assistant_start|>")], 0)
            content = message["content"]
            for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
                if part["type"] == "text":
                    add(self.encode(part["text"]), 1)
                elif part["type"] == "python":
                    add([self.special_id("<|python_start|>"), *self.encode(part["text"]),
                         self.special_id("<|python_end|>")], 1)
                elif part["type"] == "python_output":
                    add([self.special_id("<|output_start|>"), *self.encode(part["text"]),
                         self.special_id("<|output_end|>")], 0)
                else:
                    raise ValueError(f"unknown assistant message part {part['type']!r}")
            add([self.special_id("<|assistant_end|>")], 1)
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, messages: list[dict]) -> list[int]:
        """A conversation's tokens up to the `<|assistant_start|>` of the reply the model is to write."""
        ids, _ = self.render_conversation(messages, max_tokens=10 ** 9)
        return ids + [self.special_id("<|assistant_start|>")]

    @staticmethod
    def _merge_system(messages: list[dict]) -> list[dict]:
        """The model knows no system role: a system message becomes the start of the first user message."""
        if messages and messages[0]["role"] == "system":
            system, first, *rest = messages
            return [{"role": "user", "content": system["content"] + "\n\n" + first["content"]}, *rest]
        return messages

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each token stands for (0 for special tokens): the denominator of bits per byte."""
        specials = set(SPECIAL_TOKENS)
        lengths = [0] * self.vocab_size
        for token, token_id in self.hf.get_vocab().items():
            # ByteLevel spells every byte as exactly one printable character.
            lengths[token_id] = 0 if token in specials else len(token)
        return lengths
