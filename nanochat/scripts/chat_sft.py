"""Supervised finetuning, trained only on what the assistant writes (its text, python calls and
<|assistant_end|>). Two recipes, the parent model's by default:
  course  upstream 48abd7d's: the midtrained model on one conversation per row, the learning rate decaying
          linearly from the start
  2026    upstream 92d63d4's: the base model (no midtraining) on SmolTalk, MMLU x3 and GSM8K x4 packed best-fit
          into rows of the base model's length and batch, at 0.8 x its learning rates, constant for half the
          pass then decaying to 0, the optimizers warm-started from the base run's last step checkpoint

    python -m nanochat.scripts.chat_sft --parent_dir=mid_checkpoints/ --tokenizer=tok/tokenizer.json \
        --out_dir=sft_checkpoints/ --ckpt_dir=sft_checkpoints/steps
"""

import dataclasses
from typing import Literal

from nanochat import chat_train
from nanochat.retry_guard import no_retry_on_exit


@dataclasses.dataclass
class ChatSftSettings:
    """Supervised finetuning: only the assistant's tokens trained; the course's or the 2026 recipe's."""
    recipe: Literal["", "course", "2026"] = ""  # course: upstream 48abd7d's SFT; 2026: upstream 92d63d4's (empty: the parent model's recipe)
    max_seq_len: int = -1  # tokens per row, longer conversations cut (-1: the recipe's, course 2048, 2026 the base model's)
    device_batch_size: int = -1  # rows per micro-batch on each device (-1: the recipe's, course 4, 2026 the base model's)
    rows_per_step: int = -1  # rows per optimizer step over all devices, course one conversation each (-1: the recipe's, course 32, 2026 the base model's tokens per step / max_seq_len)
    num_iterations: int = -1  # optimizer steps (-1: one pass over the mixture)
    init_lr_frac: float = -1.0  # learning rates as a fraction of base training's (-1: the recipe's, course 0.02, 2026 0.8)
    warmup_ratio: float = 0.0  # 2026: fraction of the pass over which the learning rate rises linearly (course: none)
    warmdown_ratio: float = -1.0  # final fraction of the steps (2026: of the pass) over which the learning rate decays linearly (-1: the recipe's, course 1, 2026 0.5)
    final_lr_frac: float = 0.0  # 2026: learning rate at the end of the warmdown, a fraction of the initial one (course: 0)
    grad_clip: float = -1.0  # clip the global gradient norm to this, 0: no clipping (-1: the recipe's, course 1, 2026 0)
    load_optimizer: int = -1  # 1: start from the base run's optimizer state (momenta, second moments), its rates reset; 0: fresh (-1: the recipe's, course 0, 2026 1)
    mixture: Literal["hub", "offline"] = "hub"  # hub: the recipe's datasets (downloaded); offline: installed packages
    smoltalk_rows: int = 10_000  # course: SmolTalk conversations in the hub mixture (-1: all)
    simple_spelling_rows: int = 300  # course: generated "Spell the word" conversations in the mixture (upstream: 300)
    spelling_bee_rows: int = 300  # course: generated letter-counting conversations with a python tool call (upstream: 300)
    mmlu_epochs: int = 3  # 2026: times MMLU auxiliary_train is in the hub mixture (multiple choice)
    gsm8k_epochs: int = 4  # 2026: times GSM8K train is in the hub mixture (math and the python tool)


# What a -1 setting above becomes: course, upstream 48abd7d's scripts/chat_sft.py; 2026, upstream 92d63d4's
# (which also takes the lengths and batch of the base model: `resolved`).
RECIPES = {
    "course": dict(max_seq_len=2048, device_batch_size=4, rows_per_step=32, init_lr_frac=0.02, warmdown_ratio=1.0,
                   grad_clip=1.0, load_optimizer=0),
    "2026": dict(init_lr_frac=0.8, warmdown_ratio=0.5, grad_clip=0.0, load_optimizer=1),
}


def resolved(cfg: ChatSftSettings, parent_meta: dict) -> ChatSftSettings:
    """The settings with the recipe (empty: the parent model's) and each -1 replaced by the recipe's value."""
    recipe = cfg.recipe or parent_meta["model_config"].get("recipe", "course")
    values = dict(RECIPES[recipe])
    if recipe == "2026":  # upstream inherits the base model's row length, micro-batch and tokens per step
        base, tokens = parent_meta["settings"], parent_meta.get("total_batch_size", 0)
        T = base["max_seq_len"] if cfg.max_seq_len == -1 else cfg.max_seq_len
        if cfg.rows_per_step == -1 and (tokens <= 0 or tokens % T):
            raise SystemExit(f"error: the parent's tokens per step (meta.json total_batch_size: {tokens or 'none'}) "
                             f"are not a multiple of max_seq_len {T}; set chat_sft.rows_per_step")
        values.update(max_seq_len=T, device_batch_size=base["device_batch_size"], rows_per_step=tokens // T)
    unset = {key: value for key, value in values.items() if getattr(cfg, key) == -1}
    return dataclasses.replace(cfg, recipe=recipe, **unset)


def main(argv: list[str] | None = None) -> None:
    args = chat_train.parse(ChatSftSettings, __doc__, argv)
    with no_retry_on_exit(args.ckpt_dir, args.attempt):
        chat_train.train_on_conversations(ChatSftSettings, "chat_sft", pack=False, args=args, resolve=resolved)


if __name__ == "__main__":
    main()
