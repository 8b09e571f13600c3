"""Chat with a trained model in the terminal, its reply streamed token by token.

    python -m nanochat.scripts.chat_cli                 # the SFT model of ./.nanochat, interactive
    python -m nanochat.scripts.chat_cli -i mid -p "Why is the sky blue?"   # one question, one answer

Commands in the interactive mode: /clear starts a new conversation; /exit (or Ctrl-D) quits.
The model is the stage's final checkpoint, or while that stage still trains, its newest step checkpoint.

A turn that cannot be answered (a line that is not UTF-8, a conversation longer than the model's positions,
an error in generation) is answered with why, and the conversation stays as it was before it.
"""

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from nanochat import layout
from nanochat.checkpoint import find_model, load_model
from nanochat.common import is_utf8
from nanochat.compute import init_compute
from nanochat.engine import Engine, decode_stream
from nanochat.tokenizer import Tokenizer


def number(kind: type, low: float, meaning: str) -> Callable[[str], float]:
    """An argparse type: a finite `kind` (int or float) of at least `low`, else a usage error saying `meaning`."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {meaning}") from None
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {meaning}")
        return value
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--source", choices=tuple(layout.CHECKPOINTS), default="sft", help="which stage's model (default: sft)")
    parser.add_argument("-p", "--prompt", help="ask this once, print the answer, exit")
    parser.add_argument("--base_dir", type=Path, default=Path(".nanochat"), help="the workflow's base_dir")
    parser.add_argument("-t", "--temperature", type=number(float, 0, "a finite number >= 0"), default=0.6,
                        help="sampling temperature (0: greedy)")
    parser.add_argument("-k", "--top_k", type=number(int, 0, "an integer >= 0"), default=50,
                        help="sample among the k most likely tokens (0: among all)")
    parser.add_argument("--max_tokens", type=number(int, 1, "an integer >= 1"), default=512,
                        help="longest reply in tokens")
    parser.add_argument("--device", default="", help="cuda, cpu or mps (default: the best available)")
    args = parser.parse_args(argv)
    folder = find_model(args.base_dir, args.source)
    compute = init_compute(args.device)
    model, meta = load_model(folder, compute.device)
    engine = Engine(model, Tokenizer.load(args.base_dir / layout.TOKENIZER / "tokenizer.json"))
    if args.prompt is None:
        print(f"nanochat ({args.source} model, step {meta['step']}, {folder}). /clear: new conversation, "
              "/exit: quit.", flush=True)
    # A line that is not UTF-8 reads as text with lone surrogates, to be refused; strict decoding would raise
    # and lose the rest of what was read with it.
    sys.stdin.reconfigure(errors="surrogateescape")
    conversation: list[dict] = []
    while True:
        if args.prompt is not None:
            text = args.prompt
        else:
            try:
                text = input("\nUser: ").strip()
            except EOFError:
                print()
                return
            if text in ("/exit", "/quit"):
                return
            if text == "/clear":
                conversation = []
                print("(new conversation)")
                continue
            if not text:
                continue
        asked = [*conversation, {"role": "user", "content": text}]
        print("\nAssistant: " if args.prompt is None else "", end="", flush=True)
        try:
            if not is_utf8(text):
                raise ValueError("that text is not UTF-8")
            reply = stream_reply(engine, asked, args, compute)
        except Exception as error:  # noqa: BLE001 - a failed turn (a prompt too long) must not end the session
            if args.prompt is not None:
                raise SystemExit(f"error: {error}") from None
            print(f"(no reply: {error}. The conversation is as it was; /clear starts a new one.)")
            continue
        if not reply:
            print("(the model ended its reply without writing anything)", end="")
        conversation = [*asked, {"role": "assistant", "content": reply}]
        print(flush=True)
        if args.prompt is not None:
            return


def stream_reply(engine: Engine, conversation: list[dict], args: argparse.Namespace, compute) -> str:
    """Print the reply as it is generated (whole characters only) and return it."""
    ids = engine.tokenizer.render_for_completion(conversation)
    pieces = []
    with compute.autocast("decode", model=engine.model):
        for piece in decode_stream(engine.tokenizer, engine.reply(ids, args.max_tokens, args.temperature,
                                                                  args.top_k)):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    return "".join(pieces)


if __name__ == "__main__":
    main()
