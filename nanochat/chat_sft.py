"""Supervised finetuning: the midtrained model on one conversation per row, trained only on what the
assistant writes (its text, python calls and <|assistant_end|>), the learning rate decaying linearly.

    python -m nanochat.chat_sft --parent_dir=mid_checkpoints/ --tokenizer=tok/tokenizer.json \
        --out_dir=sft_checkpoints/ --ckpt_dir=sft_checkpoints/steps
"""

import dataclasses

from nanochat import chat_train
from nanochat.mid_train import MidTrainSettings


@dataclasses.dataclass
class ChatSftSettings(MidTrainSettings):
    """Supervised finetuning: one conversation per row, only the assistant's tokens trained."""
    max_seq_len: int = 2048  # longest conversation in tokens (longer ones are cut)
    device_batch_size: int = 4  # conversations per micro-batch on each device
    rows_per_step: int = 32  # conversations per optimizer step over all devices
    init_lr_frac: float = 0.02  # learning rates as a fraction of base training's
    warmdown_ratio: float = 1.0  # fraction of steps over which the learning rate decays to 0 (1: from the start)
    smoltalk_rows: int = 10_000  # SmolTalk conversations in the hub mixture (-1: all)
    spelling_examples: int = 300  # generated spelling and letter-counting conversations in the mixture


def main(argv: list[str] | None = None) -> None:
    chat_train.train_on_conversations(ChatSftSettings, "sft", pack=False, doc=__doc__, argv=argv)


if __name__ == "__main__":
    main()
