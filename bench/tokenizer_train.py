"""Tokenizer training: HF `tokenizers` (ours) vs `rustbpe` (upstream's trainer), same text, same vocab.

Prints the time ratio (ours / rustbpe, best of --repeats runs each, both in this process on the
same machine) and both tokenizers' compression (bytes per token) on held-out text.
Goal: time ratio <= 1.0, compression within 1 %.

    pip install -e '.[bench]' && python bench/tokenizer_train.py --vocab_size 4096
"""

import argparse
import os
import time

import rustbpe

from nanochat.dataset import offline_documents
from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer


def best_time(train, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = train()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=4096, help="vocabulary incl. the 9 special tokens")
    parser.add_argument("--doc_cap", type=int, default=10_000, help="characters kept per document, as tok_train")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per trainer; the best counts")
    args = parser.parse_args()

    docs = [d[: args.doc_cap] for d in offline_documents()]
    train, held_out = docs[: int(len(docs) * 0.9)], docs[int(len(docs) * 0.9):]
    held_bytes = sum(len(d.encode("utf-8")) for d in held_out)
    print(f"corpus: {sum(map(len, train)):,} chars train, {held_bytes:,} bytes held out; "
          f"vocab {args.vocab_size}; {os.cpu_count()} CPUs; best of {args.repeats}")

    def train_rustbpe():
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(iter(train), args.vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        return tok

    rust_s, rust_tok = best_time(train_rustbpe, args.repeats)
    ours_s, ours_tok = best_time(lambda: Tokenizer.train(iter(train), args.vocab_size), args.repeats)
    rust_bpt = held_bytes / sum(len(ids) for ids in rust_tok.batch_encode(held_out))
    ours_bpt = held_bytes / sum(len(ids) for ids in ours_tok.encode_batch(held_out))

    print(f"{'trainer':<22}{'train s':>9}{'bytes/token':>13}")
    print(f"{'rustbpe (baseline)':<22}{rust_s:>9.3f}{rust_bpt:>13.4f}")
    print(f"{'HF tokenizers (ours)':<22}{ours_s:>9.3f}{ours_bpt:>13.4f}")
    print(f"time ratio ours/rustbpe: {ours_s / rust_s:.2f}x (goal <= 1.00x)")
    print(f"compression ours vs rustbpe: {100 * (ours_bpt / rust_bpt - 1):+.2f}% (goal within 1%)")


if __name__ == "__main__":
    main()
