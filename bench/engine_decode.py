"""Decoding speed of the inference engine on this machine's CPU.

Same random-weight model (depth 4, width 256, vocab 4,096) and prompt, in this process:
  baseline   greedy decoding that recomputes the whole prefix for every new token
  ours       nanochat.engine.Engine: one prefill, then one token at a time from the KV cache
Prints decode tok/s of both and their ratio, the prefill time of the prompt, and the time to first
token for a 1,000-token prompt. Upstream's engine, side by side on this machine: bench/side_by_side.py.

    python bench/engine_decode.py [--prompt_tokens 512 --new_tokens 256]
"""

import argparse
import time

import torch

from nanochat import compute as compute_mod
from nanochat.engine import Engine
from nanochat.gpt import GPT, GPTConfig


class NoStopTokenizer:
    """Only what the engine needs from a tokenizer, with special tokens outside the vocabulary, so a
    random model never stops early and both modes decode exactly `new_tokens`."""
    bos_id = -1

    def special_id(self, token: str) -> int:
        return -2 - hash(token) % 1000

    def decode(self, ids: list[int]) -> str:
        return ""

    def encode(self, text: str) -> list[int]:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt_tokens", type=int, default=512)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--baseline_tokens", type=int, default=32, help="tokens decoded by the slow baseline")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(4, 4096, 1024)).eval()
    model.init_weights()
    cpu = compute_mod.Compute(torch.device("cpu"))
    prompt = torch.randint(0, 4096, (args.prompt_tokens,)).tolist()
    engine = Engine(model, NoStopTokenizer())

    with torch.no_grad(), cpu.autocast("decode"):
        model(torch.tensor([prompt]))  # warm-up
        started = time.perf_counter()
        model(torch.tensor([prompt]))
        prefill_s = time.perf_counter() - started

        started = time.perf_counter()
        [out] = engine.generate_batch(prompt, 1, max_tokens=args.new_tokens, temperature=0.0)
        cached_s = time.perf_counter() - started - prefill_s
        assert len(out) == args.new_tokens

        ids = list(prompt)
        started = time.perf_counter()
        for _ in range(args.baseline_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        recompute_s = time.perf_counter() - started

        long_prompt = torch.randint(0, 4096, (1000,)).tolist()
        started = time.perf_counter()
        next(iter(engine.generate(long_prompt, 1, max_tokens=1, temperature=0.0)))
        first_token_s = time.perf_counter() - started

    cached, recompute = args.new_tokens / cached_s, args.baseline_tokens / recompute_s
    print(f"{compute_mod.cpu_description()}; {torch.get_num_threads()} threads; d4/256/vocab 4096")
    print(f"prefill of {args.prompt_tokens} tokens: {1000 * prefill_s:.1f} ms")
    print(f"decode with KV cache (ours): {cached:,.0f} tok/s over {args.new_tokens} tokens")
    print(f"decode recomputing the prefix (baseline): {recompute:,.1f} tok/s over {args.baseline_tokens} tokens")
    print(f"ratio cached/recompute: {cached / recompute:.1f}x")
    print(f"time to first token, 1,000-token prompt: {1000 * first_token_s:.1f} ms")


if __name__ == "__main__":
    main()
