"""A sharded optimizer step over several processes (as upstream's distributed Muon and AdamW; ZeRO stage 1):
each process owns a share of the parameters, whole tensors balanced by size, and keeps optimizer state for
and updates only those. At d20 on 8 processes that is at most 0.67 GB of state per process instead of 2.92 GB
on each. Per step, instead of DDP's all-reduce and every process updating everything (the same traffic, in
two halves):

    1. each gradient is summed onto its owner (reduce) and averaged there;
    2. the gradient norm for clipping is summed over the owners (one scalar all-reduce);
    3. each owner steps its optimizers (state for its share only; Muon orthogonalizes its matrices only);
    4. each updated parameter is sent from its owner to every process (broadcast).

The result is the unsharded step's, up to the order of the sums. Step checkpoints store optimizer state by
parameter name, whatever the number of processes (nanochat.checkpoint).
"""

import torch
import torch.distributed as dist

from nanochat.compute import Compute


class ParameterShards:
    def __init__(self, model: torch.nn.Module, compute: Compute):
        self.params, self.compute = list(model.parameters()), compute
        load, self.owner = [0] * compute.world_size, {}
        for p in sorted(self.params, key=lambda q: -q.numel()):  # stable sort: the same on every process
            rank = load.index(min(load))
            self.owner[p], load[rank] = rank, load[rank] + p.numel()

    def owns(self, p: torch.nn.Parameter) -> bool:
        return self.owner[p] == self.compute.rank

    @torch.no_grad()
    def step(self, optimizers: list[torch.optim.Optimizer], grad_clip: float) -> None:
        """The optimizer step of the summed-up gradients of every process (see the module's docstring)."""
        world = self.compute.world_size
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for handle in [dist.reduce(p.grad, dst=self.owner[p], async_op=True) for p in self.params]:
            handle.wait()
        owned = [p for p in self.params if self.owns(p)]
        for p in owned:
            p.grad.div_(world)
        if grad_clip > 0:  # as torch.nn.utils.clip_grad_norm_ over the whole model
            squares = sum((p.grad.float().square().sum() for p in owned), torch.zeros((), device=self.compute.device))
            total = self.compute.all_reduce(squares).sqrt()
            scale = (grad_clip / (total + 1e-6)).clamp(max=1.0)
            for p in owned:
                p.grad.mul_(scale.to(p.grad.dtype))
        for opt in optimizers:
            opt.step()
        for handle in [dist.broadcast(p, src=self.owner[p], async_op=True) for p in self.params]:
            handle.wait()


def optimizer_state_bytes(optimizers: list[torch.optim.Optimizer]) -> int:
    """Bytes of optimizer state (moments, momentum buffers) this process holds."""
    return sum(v.numel() * v.element_size() for opt in optimizers for state in opt.state.values()
               for v in state.values() if torch.is_tensor(v))
