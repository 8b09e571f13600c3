"""Supervised finetuning: the midtrained model on one conversation per row, trained only on what the
assistant writes (its text, python calls and <|assistant_end|>), the learning rate decaying linearly.

    python -m nanochat.scripts.chat_sft --parent_dir=mid_checkpoints/ --tokenizer=tok/tokenizer.json \
        --out_dir=sft_checkpoints/ --ckpt_dir=sft_checkpoints/steps
"""

import dataclasses
from typing import Literal

from nanochat import chat_train
from nanochat.retry_guard import no_retry_on_exit


@dataclasses.dataclass
class ChatSftSettings:
    """Supervised finetuning: one conversation per row, only the assistant's tokens trained."""
    max_seq_len: int = 2048  # longest conversation in tokens (longer ones are cut)
    device_batch_size: int = 4  # conversations per micro-batch on each device
    rows_per_step: int = 32  # conversations per optimizer step over all devices
    num_iterations: int = -1  # optimizer steps (-1: one pass over the mixture)
    init_lr_frac: float = 0.02  # learning rates as a fraction of base training's
    warmdown_ratio: float = 1.0  # fraction of steps over which the learning rate decays to 0 (1: from the start)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    mixture: Literal["hub", "offline"] = "hub"  # hub: ARC, GSM8K, SmolTalk (downloaded); offline: installed packages
    smoltalk_rows: int = 10_000  # SmolTalk conversations in the hub mixture (-1: all)
    simple_spelling_rows: int = 300  # generated "Spell the word" conversations in the mixture (upstream: 300)
    spelling_bee_rows: int = 300  # generated letter-counting conversations with a python tool call (upstream: 300)


def main(argv: list[str] | None = None) -> None:
    args = chat_train.parse(ChatSftSettings, __doc__, argv)
    with no_retry_on_exit(args.ckpt_dir, args.attempt):
        chat_train.train_on_conversations(ChatSftSettings, "chat_sft", pack=False, args=args)


if __name__ == "__main__":
    main()
