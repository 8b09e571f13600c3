"""How long to train, and with how many tokens per step: the training horizon of both recipes, from parameter
counts (plain numbers, no torch, so `plan` computes it without building a model).

Course (upstream 48abd7d): num_iterations, else a FLOPs budget, else tokens = ratio x all parameters; the batch
size is a setting.

2026 (upstream 92d63d4's scripts/base_train.py): the horizon is ratio x *scaling* parameters (transformer
matrices + head: the cleanest scaling laws, upstream's dev/LOG.md of Jan 27, 2026), measured against the d12
reference model upstream tuned its hyperparameters on (D_REF tokens at B_REF tokens per step). From there:
  - the total batch size, unless set, grows as the horizon^0.383 (Power Lines, arXiv 2505.13738), rounded to a
    power of 2;
  - every learning rate scales as sqrt(B / B_REF);
  - Muon's weight decay scales as sqrt(B / B_REF) x D_REF / D, which keeps B / (lr x wd x D) constant
    (arXiv 2405.13698);
  - the steps are the horizon's tokens // the batch size (or from num_iterations, or a FLOPs budget).
"""

import dataclasses
import math

B_REF = 2 ** 19  # 2026: the best total batch size at d12, in tokens (measured upstream)
REFERENCE_DEPTH = 12  # 2026: the depth whose horizon and batch size the others are scaled from


@dataclasses.dataclass(frozen=True)
class Horizon:
    """A 2026 run's length and what its batch size does to the hyperparameters."""
    num_steps: int
    total_batch_size: int  # tokens per optimizer step
    lr_scale: float  # the factor of every learning rate for this batch size
    weight_decay: float  # Muon's weight decay at step 0, for this batch size and horizon


def course_num_steps(num_params: int, flops_per_token: float, *, num_iterations: int, target_flops: float,
                     target_param_data_ratio: float, total_batch_size: int) -> int:
    """Course: num_iterations, else a FLOPs budget, else tokens = ratio x all parameters; at least 1."""
    if num_iterations > 0:
        return num_iterations
    if target_flops > 0:
        return max(1, round(target_flops / (flops_per_token * total_batch_size)))
    return max(1, round(target_param_data_ratio * num_params / total_batch_size))


def scaling_params(counts: dict[str, int]) -> int:
    """2026: the parameters the horizon is a multiple of, from GPT.num_scaling_params()'s counts."""
    return counts["transformer_matrices"] + counts["lm_head"]


def horizon_2026(num_scaling_params: int, reference_scaling_params: int, flops_per_token: float, *,
                 num_iterations: int, target_flops: float, target_param_data_ratio: float, total_batch_size: int,
                 weight_decay: float) -> Horizon:
    """2026: steps, batch size (automatic when -1), learning-rate scale and Muon weight decay, as upstream
    92d63d4 computes them. `reference_scaling_params`: those of the d12 model of the same vocabulary, context and
    width per layer. The weight decay is scaled by the ratio's horizon even when num_iterations or a FLOPs
    budget sets the steps (as upstream)."""
    if target_param_data_ratio == 0:
        raise ValueError("target_param_data_ratio must not be 0: the 2026 recipe scales the batch size and "
                         "weight decay by the horizon it sets")
    target_tokens = int(target_param_data_ratio * num_scaling_params)
    d_ref = target_param_data_ratio * reference_scaling_params
    if total_batch_size == -1:
        predicted = B_REF * (target_tokens / d_ref) ** 0.383
        total_batch_size = 2 ** round(math.log2(predicted))
    batch_ratio = total_batch_size / B_REF
    lr_scale = batch_ratio ** 0.5 if batch_ratio != 1.0 else 1.0
    scaled_weight_decay = weight_decay * math.sqrt(total_batch_size / B_REF) * (d_ref / target_tokens)
    if num_iterations > 0:
        steps = num_iterations
    elif target_flops > 0:
        steps = round(target_flops / (flops_per_token * total_batch_size))
    elif target_param_data_ratio > 0:
        steps = target_tokens // total_batch_size
    else:
        raise ValueError("no training horizon: set num_iterations, target_flops or target_param_data_ratio")
    return Horizon(max(1, steps), total_batch_size, lr_scale, scaled_weight_decay)
