"""What the schema cannot say about a config: settings each valid alone that the stages would refuse together
(a width that is not a multiple of the head dimension, a batch that does not divide into micro-batches).
The workflow checks them when it parses (workflow/Snakefile), so that such a config stops the run at once,
naming the key, not hours later inside a job. Torch-free; gpt.GPTConfig.from_depth sizes the model with
`model_shape`, so the check and the model cannot disagree."""

from typing import Any


def model_shape(depth: int, model_dim: int = 0, n_kv_head: int = 0, recipe: str = "course") -> tuple[int, int, int]:
    """(width, query heads, key/value heads): upstream's sizing. Course (48abd7d): width = depth x 64, head dim
    128 where it divides (else 64). 2026 (92d63d4): width = depth x 64 rounded up to a multiple of 128, head
    dim 128. A ValueError names the setting (base_train.<key>) that does not fit."""
    multiple = 128 if recipe == "2026" else 64
    dim = model_dim or -(-depth * 64 // multiple) * multiple
    if dim % multiple:
        raise ValueError(f"base_train.model_dim={model_dim}: the model's width must be a multiple of {multiple} "
                         f"(its head dimension), e.g. {multiple}, {2 * multiple}, {4 * multiple}")
    n_head = dim // (128 if dim % 128 == 0 else 64)
    n_kv = n_kv_head or n_head
    if n_kv > n_head or n_head % n_kv:
        raise ValueError(f"base_train.n_kv_head={n_kv_head}: must divide the {n_head} query heads of width {dim} "
                         f"(divisors: {', '.join(str(d) for d in range(1, n_head + 1) if n_head % d == 0)}; "
                         "0: as many as query heads)")
    return dim, n_head, n_kv


def problems(config: dict[str, Any]) -> list[str]:
    """Why the stages would refuse `config` (sections as in config/config.yaml), one message per key."""
    found = []
    base = config["base_train"]
    try:
        model_shape(base["depth"], base["model_dim"], base["n_kv_head"], base["recipe"])
    except ValueError as err:
        found.append(str(err))
    pattern = base["window_pattern"]
    if pattern.strip("SL") or (base["recipe"] == "course" and "S" in pattern):
        found.append(f"base_train.window_pattern={pattern!r}: letters S (short window) and L (long) only, and the "
                     "course recipe has no short windows (empty: the recipe's pattern)")
    micro_batch = base["device_batch_size"] * base["max_seq_len"]
    if base["total_batch_size"] > 0 and base["total_batch_size"] % micro_batch:  # -1: the recipe's
        found.append(f"base_train.total_batch_size={base['total_batch_size']}: must be a multiple of "
                     f"device_batch_size x max_seq_len = {micro_batch} tokens (and of that times the GPUs)")
    for stage in ("mid_train", "chat_sft"):
        rows, per_device = config[stage]["rows_per_step"], config[stage]["device_batch_size"]
        if rows > 0 and per_device > 0 and rows % per_device:  # -1: the recipe's, resolved by the stage
            found.append(f"{stage}.rows_per_step={rows}: must be a multiple of device_batch_size={per_device} "
                         "(and of that times the GPUs)")
    sft = config["chat_sft"]
    warm_start = sft["load_optimizer"] == 1 or (sft["load_optimizer"] == -1 and
                                                 (sft["recipe"] or base["recipe"]) == "2026")
    if warm_start and config["runtime"]["checkpoint_every"] == 0:
        found.append("chat_sft.load_optimizer: the 2026 SFT starts from the base run's optimizer state, which only "
                     "a step checkpoint holds, and runtime.checkpoint_every=0 writes none (set chat_sft "
                     "load_optimizer: 0, or checkpoint_every above 0)")
    return found
