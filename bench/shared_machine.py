"""Training, evaluation and tests alone and beside a second CPU-heavy process, under three OpenMP wait policies.

Torch's CPU kernels run on OpenMP (libgomp), whose idle threads spin before they sleep. On a machine that
another CPU-heavy process shares (a second local run, a SLURM job on the same node, a laptop's browser),
spinning threads take the cores the other process's threads need, and both slow down. The policies:
  default   libgomp's own: 300,000 spins before sleeping (GOMP_SPINCOUNT=300000)
  short     GOMP_SPINCOUNT=3000: a spin 100 times shorter, what nanochat sets (nanochat/__init__.py)
  passive   OMP_WAIT_POLICY=PASSIVE (GOMP_SPINCOUNT=0): idle threads sleep at once
Each policy is set through GOMP_SPINCOUNT, which libgomp obeys over OMP_WAIT_POLICY's spin, so that the
choice of the stages and the tests (nanochat/__init__.py, tests/conftest.py) does not blur it.
Each figure is a fresh process of its own, with the policy in its environment; "beside" runs a second
training process with the same policy for the whole measurement (as a second local run would).
  train     optimizer steps of the tiny preset's model (bench/base_train.py's step), tokens/s
  eval      forward passes without gradients of the same model (what base_loss and CORE do), tokens/s
  tests     tests/test_gpt.py, test_fused.py and test_optim.py, seconds of wall time

    python bench/shared_machine.py [--reps 2] [--seconds 8]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICIES = {"default": {"GOMP_SPINCOUNT": "300000"}, "short": {"GOMP_SPINCOUNT": "3000"},
            "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}}
TESTS = ["tests/test_gpt.py", "tests/test_fused.py", "tests/test_optim.py"]
SHAPE = {"depth": 2, "T": 256, "B": 8, "total": 4096, "vocab": 4096}  # config/presets/tiny.yaml's base_train


def tokens_per_second(workload: str, seconds: float) -> float:
    """In this process: the tiny model's training steps or no-grad forwards, for about `seconds`."""
    import torch

    from nanochat.compute import Compute
    from nanochat.gpt import GPT, GPTConfig

    sys.path.insert(0, str(Path(__file__).parent))
    from base_train import step_time

    if workload == "train":
        one, _ = step_time(SHAPE["depth"], SHAPE["T"], SHAPE["B"], SHAPE["total"], SHAPE["vocab"], True, 2)
        per_step, _ = step_time(SHAPE["depth"], SHAPE["T"], SHAPE["B"], SHAPE["total"], SHAPE["vocab"], True,
                                max(2, round(seconds / one)))
        return SHAPE["total"] / per_step
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(SHAPE["depth"], SHAPE["vocab"], SHAPE["T"])).eval()
    model.init_weights()
    x = torch.randint(0, SHAPE["vocab"], (SHAPE["B"], SHAPE["T"]))
    cpu, done, started = Compute(torch.device("cpu")), 0, None
    with torch.inference_mode(), cpu.autocast():
        model(x, x)  # warm-up
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            model(x, x)
            done += x.numel()
    return done / (time.perf_counter() - started)


def measure(workload: str, policy: str, beside: bool, seconds: float) -> float:
    """One figure in fresh processes: tokens/s (train, eval) or seconds (tests)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy])
    other = None
    if beside:  # a second training for the whole measurement, with the same policy
        other = subprocess.Popen([sys.executable, __file__, "--worker", "train", "--seconds", "100000"], env=env,
                                 stdout=subprocess.DEVNULL)
        time.sleep(3)  # past its start-up: it computes when the measurement starts
    try:
        if workload == "tests":
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO,
                           env=env, check=True, capture_output=True)
            return time.perf_counter() - started
        out = subprocess.run([sys.executable, __file__, "--worker", workload, "--seconds", str(seconds)], env=env,
                             check=True, capture_output=True, text=True).stdout
        return float(out.split()[-1])
    finally:
        if other:
            other.kill()
            other.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=2, help="figures per cell, interleaved (median shown)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds of each train/eval figure")
    workloads = ["train", "eval", "tests"]
    parser.add_argument("--workloads", nargs="+", default=workloads, choices=workloads)
    parser.add_argument("--worker", choices=["train", "eval"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.seconds > 1000:  # the process beside: train until killed
            while True:
                tokens_per_second("train", 60)
        print(f"{tokens_per_second(args.worker, args.seconds):.1f}")
        return
    figures: dict[tuple[str, str, bool], list[float]] = {}
    for _ in range(args.reps):  # interleaved, so that a drift of the machine touches every cell alike
        for workload in args.workloads:
            for policy in POLICIES:
                for beside in (False, True):
                    figures.setdefault((workload, policy, beside), []).append(
                        measure(workload, policy, beside, args.seconds))
    print(f"{os.cpu_count()} CPUs; median of {args.reps}, each figure in fresh processes (runs in brackets)")
    print("| workload | policy | alone | beside a second training | beside / alone |")
    print("|---|---|---|---|---|")
    for workload in args.workloads:
        unit = "s" if workload == "tests" else "tok/s"
        for policy in POLICIES:
            alone, beside = (figures[(workload, policy, b)] for b in (False, True))
            a, b = statistics.median(alone), statistics.median(beside)
            ratio = a / b if workload == "tests" else b / a  # throughput kept, or 1 / time taken
            digits = 1 if workload == "tests" else 0
            runs = [", ".join(f"{x:,.{digits}f}" for x in xs) for xs in (alone, beside)]
            print(f"| {workload} | {policy} | {a:,.{digits}f} {unit} ({runs[0]}) | {b:,.{digits}f} {unit} ({runs[1]}) "
                  f"| {ratio:.2f} |")


if __name__ == "__main__":
    main()
