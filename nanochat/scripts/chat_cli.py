"""Chat with a trained model in the terminal, its reply streamed token by token.

    python -m nanochat.scripts.chat_cli                 # the SFT model of ./.nanochat, interactive
    python -m nanochat.scripts.chat_cli -i mid -p "Why is the sky blue?"   # one question, one answer

Commands in the interactive mode: /clear starts a new conversation; /exit (or Ctrl-D) quits.
The model is the stage's final checkpoint, or while that stage still trains, its newest step checkpoint.
"""

import argparse
import sys
from pathlib import Path

from nanochat import layout
from nanochat.checkpoint import find_model, load_model
from nanochat.compute import init_compute
from nanochat.engine import Engine, decode_stream
from nanochat.tokenizer import Tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--source", choices=tuple(layout.CHECKPOINTS), default="sft", help="which stage's model (default: sft)")
    parser.add_argument("-p", "--prompt", help="ask this once, print the answer, exit")
    parser.add_argument("--base_dir", type=Path, default=Path(".nanochat"), help="the workflow's base_dir")
    parser.add_argument("-t", "--temperature", type=float, default=0.6, help="sampling temperature (0: greedy)")
    parser.add_argument("-k", "--top_k", type=int, default=50, help="sample among the k most likely tokens")
    parser.add_argument("--max_tokens", type=int, default=512, help="longest reply in tokens")
    parser.add_argument("--device", default="", help="cuda, cpu or mps (default: the best available)")
    args = parser.parse_args(argv)
    folder = find_model(args.base_dir, args.source)
    compute = init_compute(args.device)
    model, meta = load_model(folder, compute.device)
    engine = Engine(model, Tokenizer.load(args.base_dir / layout.TOKENIZER / "tokenizer.json"))
    if args.prompt is None:
        print(f"nanochat ({args.source} model, step {meta['step']}, {folder}). /clear: new conversation, "
              "/exit: quit.", flush=True)
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
        conversation.append({"role": "user", "content": text})
        print("\nAssistant: " if args.prompt is None else "", end="", flush=True)
        reply = stream_reply(engine, conversation, args, compute)
        if not reply:
            print("(the model ended its reply without writing anything)", end="")
        conversation.append({"role": "assistant", "content": reply})
        print(flush=True)
        if args.prompt is not None:
            return


def stream_reply(engine: Engine, conversation: list[dict], args: argparse.Namespace, compute) -> str:
    """Print the reply as it is generated (whole characters only) and return it."""
    ids = engine.tokenizer.render_for_completion(conversation)
    pieces = []
    with compute.autocast(decode=True):
        for piece in decode_stream(engine.tokenizer, engine.reply(ids, args.max_tokens, args.temperature,
                                                                  args.top_k)):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    return "".join(pieces)


if __name__ == "__main__":
    main()
