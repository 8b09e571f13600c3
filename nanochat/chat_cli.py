"""Chat with a trained model in the terminal, its reply streamed token by token.

    python -m nanochat.chat_cli                 # the SFT model of ./.nanochat, interactive
    python -m nanochat.chat_cli -i mid -p "Why is the sky blue?"   # one question, one answer

Commands in the interactive mode: /clear starts a new conversation; /exit (or Ctrl-D) quits.
The model is the stage's final checkpoint, or while that stage still trains, its newest step checkpoint.
"""

import argparse
import sys
from pathlib import Path

STAGES = ("base", "mid", "sft", "rl")


def find_checkpoint(base_dir: Path, stage: str) -> Path:
    """The stage's final checkpoint folder, else its newest complete step checkpoint."""
    final = base_dir / f"{stage}_checkpoints"
    if (final / "model.pt").is_file():
        return final
    steps = sorted((final / "steps").glob("*/step_*/meta.json"), key=lambda p: p.parent.name)
    if not steps:
        raise SystemExit(f"error: no {stage} checkpoint under {final}; train it first "
                         f"(snakemake --profile profiles/local all)")
    return steps[-1].parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--source", choices=STAGES, default="sft", help="which stage's model (default: sft)")
    parser.add_argument("-p", "--prompt", help="ask this once, print the answer, exit")
    parser.add_argument("--base_dir", type=Path, default=Path(".nanochat"), help="the workflow's base_dir")
    parser.add_argument("-t", "--temperature", type=float, default=0.6, help="sampling temperature (0: greedy)")
    parser.add_argument("-k", "--top_k", type=int, default=50, help="sample among the k most likely tokens")
    parser.add_argument("--max_tokens", type=int, default=512, help="longest reply in tokens")
    parser.add_argument("--device", default="", help="cuda, cpu or mps (default: the best available)")
    args = parser.parse_args(argv)
    folder = find_checkpoint(args.base_dir, args.source)

    from nanochat.checkpoint import load_model
    from nanochat.compute import init_compute
    from nanochat.engine import Engine
    from nanochat.tokenizer import Tokenizer

    compute = init_compute(args.device)
    model, meta = load_model(folder, compute.device)
    engine = Engine(model, Tokenizer.load(args.base_dir / "tokenizer" / "tokenizer.json"))
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


def stream_reply(engine, conversation: list[dict], args, compute) -> str:
    """Print the reply as it is generated (whole characters only) and return it."""
    tokens, printed = [], ""
    ids = engine.tokenizer.render_for_completion(conversation)
    with compute.autocast(decode=True):
        for step in engine.generate(ids, 1, args.max_tokens, args.temperature, args.top_k):
            if step[0] is None or step[0] in engine.stop:
                break
            tokens.append(step[0])
            text = engine.tokenizer.decode(tokens)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                sys.stdout.write(text[len(printed):])
                sys.stdout.flush()
                printed = text
    return engine.tokenizer.decode(tokens)


if __name__ == "__main__":
    main()
