"""Midtraining: the base model continues on conversations packed into rows, every token trained, so it
learns the chat format, the special tokens and the python tool before SFT.

    python -m nanochat.scripts.mid_train --parent_dir=base_checkpoints/ --tokenizer=tok/tokenizer.json \
        --out_dir=mid_checkpoints/ --ckpt_dir=mid_checkpoints/steps
"""

import dataclasses
from typing import Literal

from nanochat import chat_train
from nanochat.retry_guard import no_retry_on_exit


@dataclasses.dataclass
class MidTrainSettings:
    """Midtraining: the base model continued on packed conversations, every token trained."""
    max_seq_len: int = 2048  # tokens per packed row
    device_batch_size: int = 32  # rows per micro-batch on each device
    rows_per_step: int = 256  # rows per optimizer step over all devices (256 x 2048 = 524,288 tokens)
    num_iterations: int = -1  # optimizer steps (-1: one pass over the mixture)
    init_lr_frac: float = 1.0  # learning rates as a fraction of base training's
    warmdown_ratio: float = 0.2  # final fraction of steps over which the learning rate decays linearly to 0
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    mixture: Literal["hub", "offline"] = "hub"  # hub: SmolTalk, MMLU auxiliary_train, GSM8K (downloaded); offline: installed packages
    smoltalk_rows: int = -1  # SmolTalk conversations in the hub mixture (-1: all)
    simple_spelling_rows: int = 200_000  # generated "Spell the word" conversations in the mixture (upstream: 200K)
    spelling_bee_rows: int = 80_000  # generated letter-counting conversations with a python tool call (upstream: 80K)


def main(argv: list[str] | None = None) -> None:
    args = chat_train.parse(MidTrainSettings, __doc__, argv)
    with no_retry_on_exit(args.ckpt_dir, args.attempt):
        chat_train.train_on_conversations(MidTrainSettings, "mid_train", pack=True, args=args)


if __name__ == "__main__":
    main()
