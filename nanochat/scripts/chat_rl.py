"""Reinforcement learning on GSM8K's training questions, "GRPO-lite" as upstream: for each question sample
several answers, reward 1 for the right final number ('#### N'), advantage = reward - mean reward of the
question's samples, and raise the log-probability of the sampled tokens in proportion (no KL, no clipping).

    python -m nanochat.scripts.chat_rl --parent_dir=sft_checkpoints/ --tokenizer=tok/tokenizer.json \
        --gsm8k=hub/gsm8k_train/ --out_dir=rl_checkpoints/ --ckpt_dir=rl_checkpoints/steps

The samples of a question share one prefill (nanochat.engine, calculator tool included) and are seeded
by the question's index, so a resumed run draws exactly the samples it would have.
"""

import argparse
import dataclasses

import torch

from nanochat import chat_train
from nanochat.catalog import CATALOG
from nanochat.engine import Engine
from nanochat.retry_guard import no_retry_on_exit
from nanochat.tasks import gsm8k


@dataclasses.dataclass
class ChatRlSettings:
    """RL on GSM8K after SFT (needs GSM8K's training set from the hub; runs when workflow.chat_rl is true)."""
    num_iterations: int = -1  # optimizer steps (-1: one pass over the questions)
    questions_per_step: int = 16  # questions per optimizer step over all devices
    samples_per_question: int = 16  # sampled answers per question (one micro-batch)
    max_new_tokens: int = 256  # longest sampled answer in tokens
    temperature: float = 1.0  # sampling temperature
    top_k: int = 50  # sample among the k most likely tokens
    init_lr_frac: float = 0.05  # learning rates as a fraction of base training's
    warmdown_ratio: float = 1.0  # fraction of steps over which the learning rate decays to 0 (1: from the start)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)


class RolloutLoader:
    """One micro-batch per question: its samples as rows (prompt + answer), targets only on the answer,
    and each row's advantage. Question g of the run goes to rank (g % questions_per_step) // accum. The state
    is the number of optimizer steps done, which means the same for any number of processes."""

    def __init__(self, model, tokenizer, questions: list[dict], cfg: ChatRlSettings, rank: int, world_size: int,
                 state: dict[str, int] | None = None):
        if cfg.questions_per_step % world_size:
            raise SystemExit(f"error: questions_per_step {cfg.questions_per_step} must be a multiple of {world_size}")
        self.model, self.tokenizer, self.questions, self.cfg = model, tokenizer, questions, cfg
        self.engine = Engine(model, tokenizer)
        self.accum, self.rank = cfg.questions_per_step // world_size, rank
        self.taken = (state or {"steps": 0})["steps"] * self.accum  # questions this rank has taken
        self.rewards: list[float] = []  # since the last `mean_reward()`

    def next_batch(self, device):
        """(inputs, targets, advantages) of one question's samples, on `device`."""
        step, micro = divmod(self.taken, self.accum)
        g = step * self.cfg.questions_per_step + self.rank * self.accum + micro
        self.taken += 1
        item = self.questions[g % len(self.questions)]
        prompt = self.tokenizer.render_for_completion([{"role": "user", "content": item["question"]}])
        end = self.tokenizer.special_id("<|assistant_end|>")
        self.model.eval()
        answers = self.engine.generate_batch(prompt, self.cfg.samples_per_question, max_tokens=self.cfg.max_new_tokens,
                                             temperature=self.cfg.temperature, top_k=self.cfg.top_k, seed=g)
        self.model.train()
        rewards = [float(gsm8k.grade(item, self.tokenizer.decode(a))) for a in answers]
        rows = [a + [end] if len(a) < self.cfg.max_new_tokens else a for a in answers]
        self.rewards += rewards
        width = len(prompt) + max(map(len, rows)) - 1
        x = torch.full((len(rows), width), end, dtype=torch.long)
        y = torch.full((len(rows), width), -1, dtype=torch.long)
        for i, answer in enumerate(rows):
            ids = torch.tensor(prompt + answer)
            x[i, :len(ids) - 1] = ids[:-1]
            y[i, len(prompt) - 1:len(ids) - 1] = ids[len(prompt):]
        mean = sum(rewards) / len(rewards)
        advantages = torch.tensor([r - mean for r in rewards])
        return x.to(device), y.to(device), advantages.to(device)

    def mean_reward(self) -> float:
        rewards, self.rewards = self.rewards, []
        return sum(rewards) / max(len(rewards), 1)

    def state_dict(self) -> dict[str, int]:
        return {"steps": self.taken // self.accum}


def policy_gradient_loss(model, batch):
    """-(advantage x log-probability of each sampled token), averaged over the sampled tokens."""
    x, y, advantages = batch
    nll = model(x, y, loss_reduction="none").view(y.shape)  # 0 where the target is -1
    return (nll * advantages[:, None]).sum() / (y != -1).sum().clamp(min=1)


def main(argv: list[str] | None = None) -> None:
    args = chat_train.parse(ChatRlSettings, __doc__, argv, gsm8k="GSM8K's training set (downloaded folder)")
    with no_retry_on_exit(args.ckpt_dir, args.attempt):
        train(args)


def train(args: argparse.Namespace) -> None:
    stage = chat_train.setup(ChatRlSettings, "chat_rl", args, extra_inputs=[args.gsm8k])
    cfg = stage.cfg
    questions = gsm8k.read(stage.args.gsm8k)
    loader = RolloutLoader(stage.model, stage.tokenizer, questions, cfg, stage.compute.rank,
                           stage.compute.world_size, stage.loader_state)
    steps = cfg.num_iterations if cfg.num_iterations > 0 else max(1, len(questions) // cfg.questions_per_step)
    tokens = cfg.questions_per_step * cfg.samples_per_question * cfg.max_new_tokens
    stage.train(loader, steps, loader.mean_reward, "mean_reward", tokens, loss_fn=policy_gradient_loss)
    stage.finish(steps, "mean_reward", {"questions": len(questions), "data": {"gsm8k_train": CATALOG["gsm8k_train"].describe()}})


if __name__ == "__main__":
    main()
