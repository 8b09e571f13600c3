"""Inference: one prefill of the prompt, then batched sampling of several completions that share the
prompt's KV cache, with the calculator tool; and greedy completions of many prompts decoded together
(evaluation), each row stopping on its own.

When the model writes <|python_start|>expr<|python_end|>, the engine evaluates `expr` (arithmetic, or a
string's .count) and forces <|output_start|>result<|output_end|> into that completion, as the model saw
in training. Generation of a completion stops at <|assistant_end|> or <|bos|>.

A prompt and its completion share the model's positions (its rotary cache, GPT.rotary_len: ten times the
training sequence length): `generate` refuses a prompt that leaves no position for a token (PromptTooLong,
before any work) and ends a completion where the positions run out, as it ends one at max_tokens.
"""

import re
import signal
import threading
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from nanochat.attention import KVCache

_ARITHMETIC = re.compile(r"[0-9+\-*/.() ]{1,100}")
_COUNT = re.compile(r"""'[A-Za-z ]{0,60}'\.count\('[A-Za-z]'\)""")


def use_calculator(expr: str, timeout_s: int = 3) -> str | None:
    """The value of a whitelisted expression as text, or None if it is not allowed or fails.

    Allowed: + - * / and parentheses over decimal numbers (no `**`, at most 100 characters, so the work is
    bounded by construction), or 'letters'.count('x'). No names, no builtins. In the main thread a
    SIGALRM limit applies too."""
    expr = expr.strip().replace(",", "")
    if not (_ARITHMETIC.fullmatch(expr) and "**" not in expr) and not _COUNT.fullmatch(expr):
        return None
    use_alarm = threading.current_thread() is threading.main_thread()

    def timeout(signum, frame):
        raise TimeoutError(expr)

    previous = signal.signal(signal.SIGALRM, timeout) if use_alarm else None
    try:
        if use_alarm:
            signal.alarm(timeout_s)
        value = eval(expr, {"__builtins__": {}}, {})  # noqa: S307 - whitelisted characters only, see above
    except Exception:  # noqa: BLE001 - division by zero, syntax errors, the timeout: no value
        return None
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(round(value, 6) if isinstance(value, float) else value)


def right_padded(rows: list[list[int]], device: torch.device | str) -> torch.Tensor:
    """Token rows of different lengths as one (rows, longest) tensor, each padded with its last token. Under
    causal attention no position sees what follows it, so every real position computes as it would alone."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=device)


class PromptTooLong(ValueError):
    """A prompt that leaves the model no position to write a token in."""


class _Row:
    """One completion being generated: tool output still to feed, an open python call, whether it ended."""

    def __init__(self):
        self.forced: list[int] = []
        self.python: list[int] | None = None
        self.done = False


class Engine:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        special = tokenizer.special_id
        self.python_start, self.python_end = special("<|python_start|>"), special("<|python_end|>")
        self.output_start, self.output_end = special("<|output_start|>"), special("<|output_end|>")
        self.stop = {special("<|assistant_end|>"), tokenizer.bos_id}

    def _advance(self, row: _Row, sampled: int) -> int | None:
        """The row's next token (the sampled one unless tool output is due), None once the row has ended."""
        if row.done:
            return None
        token = row.forced.pop(0) if row.forced else sampled
        if token in self.stop:
            row.done = True
        elif token == self.python_start:
            row.python = []
        elif token == self.python_end and row.python is not None:
            result = use_calculator(self.tokenizer.decode(row.python))
            if result is not None:
                row.forced = [self.output_start, *self.tokenizer.encode(result), self.output_end]
            row.python = None
        elif row.python is not None:
            row.python.append(token)
        return token

    @property
    def context(self) -> int:
        """Positions the model has, shared by a prompt and its completion."""
        return self.model.rotary_len

    def room(self, prompt_tokens: int) -> int:
        """The longest completion of a prompt of this many tokens; PromptTooLong if there is no room."""
        room = self.context - prompt_tokens
        if room < 1:
            raise PromptTooLong(f"the prompt has {prompt_tokens} tokens; this model has {self.context} positions "
                                "for the prompt and its reply together")
        return room

    @torch.inference_mode()
    def generate(self, tokens: list[int], num_samples: int = 1, max_tokens: int = 256, temperature: float = 1.0,
                 top_k: int = 0, seed: int = 42, top_p: float = 1.0) -> Iterator[list[int | None]]:
        """Yield, per decoding step, the next token of each completion (None once that one has ended), at most
        max_tokens steps or as many as the model has positions left for."""
        model, device = self.model, self.model.lm_head.weight.device
        max_tokens = min(max_tokens, self.room(len(tokens)))
        cache = KVCache.for_model(self.model, 1, len(tokens) + max_tokens)
        hidden = model.hidden(torch.tensor([tokens], device=device), kv_cache=cache)
        logits = model.logits(hidden[:, -1])  # the head of the last position only: a vocab-sized matmul
        cache.repeat(num_samples)  # every sample continues the one prefill
        logits = logits.expand(num_samples, -1)
        rng = torch.Generator(device=device).manual_seed(seed)
        rows = [_Row() for _ in range(num_samples)]
        for _ in range(max_tokens):
            sampled = self._sample(logits, temperature, top_k, top_p, rng)
            step = [self._advance(row, token) for row, token in zip(rows, sampled)]
            yield step
            if all(row.done for row in rows):
                return
            column = [t if t is not None else self.tokenizer.bos_id for t in step]
            logits = model(torch.tensor(column, device=device).view(-1, 1), kv_cache=cache)[:, -1, :]

    @torch.inference_mode()
    def generate_greedy(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy completions (without the stop token) of several prompts decoded together, each stopping on
        its own: the tokens `generate_batch(prompt, 1, temperature=0)` gives each prompt alone.

        The prompts are right-padded into one prefill (causal attention: no prompt sees the padding), then
        every row decodes at its own position (KVCache.set_lengths)."""
        model, device = self.model, self.model.lm_head.weight.device
        lengths = [len(p) for p in prompts]
        ids = right_padded(prompts, device)
        cache = KVCache.for_model(self.model, len(prompts), ids.size(1) + max_tokens)
        last = torch.tensor(lengths, device=device) - 1
        logits = model.logits(model.hidden(ids, kv_cache=cache)[torch.arange(len(prompts), device=device), last])
        cache.set_lengths(lengths)
        rows, out = [_Row() for _ in prompts], [[] for _ in prompts]
        for _ in range(max_tokens):
            step = [self._advance(row, token) for row, token in zip(rows, logits.argmax(dim=-1).tolist())]
            for completion, token in zip(out, step):
                if token is not None and token not in self.stop:
                    completion.append(token)
            if all(row.done for row in rows):
                break
            column = [t if t is not None else self.tokenizer.bos_id for t in step]
            logits = model(torch.tensor(column, device=device).view(-1, 1), kv_cache=cache)[:, -1, :]
        return out

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, rng: torch.Generator) -> list[int]:
        """Greedy at temperature 0; else a draw among the top_k most likely tokens (0: all), then among the
        most likely whose probabilities reach top_p together (nucleus sampling; 1: all)."""
        if temperature <= 0:
            return logits.argmax(dim=-1).tolist()
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            ranked, order = probs.sort(dim=-1, descending=True)
            ranked[ranked.cumsum(dim=-1) - ranked >= top_p] = 0.0  # those after the nucleus is complete
            probs = torch.zeros_like(probs).scatter(-1, order, ranked)
        return torch.multinomial(probs, 1, generator=rng).view(-1).tolist()

    def generate_batch(self, tokens: list[int], num_samples: int = 1, **kwargs) -> list[list[int]]:
        """Each sample's completion (without the stop token)."""
        out: list[list[int]] = [[] for _ in range(num_samples)]
        for step in self.generate(tokens, num_samples, **kwargs):
            for i, token in enumerate(step):
                if token is not None and token not in self.stop:
                    out[i].append(token)
        return out

    def reply(self, tokens: list[int], max_tokens: int, temperature: float, top_k: int, top_p: float = 1.0,
              seed: int = 42) -> Iterator[int]:
        """The tokens of one completion as they are generated, without the stop token."""
        for step in self.generate(tokens, 1, max_tokens, temperature, top_k, seed, top_p):
            if step[0] is None or step[0] in self.stop:
                return
            yield step[0]


def decode_stream(tokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """Per token, the new text it completes: "" while a multi-byte character is still partial."""
    generated, sent = [], ""
    for token in tokens:
        generated.append(token)
        text = tokenizer.decode(generated)
        if text.endswith("\ufffd"):  # wait for the rest of the character
            yield ""
            continue
        yield text[len(sent):]
        sent = text
