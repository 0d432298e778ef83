"""Updates/s of the FlowRL reference (bytedance/FlowRL, PyTorch) on the CPU, for benchmarks/thread_scaling.py.

Runs with an interpreter that has torch and numpy (neither is a dependency of this project) against a checkout of
the reference given by --reference. It times `flowAC.update_parameters` as the reference's training loop calls it:
a batch sampled from its own ReplayMemory (filled with random transitions), the critics every update, the policy
and the targets every second one, its torch.compile settings unchanged. The reference hard-codes CUDA in two places
(the policy's action scale and its sampling device); both are redirected to the CPU here, which changes nothing
that is computed. Prints one JSON line.

    python benchmarks/reference_update.py --reference PATH --obs-size 67 --action-size 21 --width 256
"""

import argparse
import json
import sys
import time
import types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="checkout of bytedance/FlowRL")
    parser.add_argument("--obs-size", type=int, required=True)
    parser.add_argument("--action-size", type=int, required=True)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, required=True, help="torch's intra-op threads")
    parser.add_argument("--updates", type=int, default=50, help="updates per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the best is reported")
    parser.add_argument("--buffer", type=int, default=10_000, help="random transitions in the replay memory")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.Tensor.cuda = lambda tensor, *_, **__: tensor  # the policy's action scale asks for CUDA
    sys.path.insert(0, args.reference)
    from model.algo import flowAC
    from utilis.Replaybuffer import ReplayMemory

    config = types.SimpleNamespace(gamma=0.99, tau=0.005, quantile=0.9, lamda=0.1, epsilon=0.0, policy="Flow",
                                   target_update_interval=2, cuda=False, device=0, hidden_size=args.width, lr=3e-4,
                                   steps=1)
    high = np.ones(args.action_size, np.float32)
    agent = flowAC(args.obs_size, types.SimpleNamespace(shape=high.shape, low=-high, high=high), config)
    agent.policy.device = torch.device("cpu")  # hard-coded "cuda:0" in the reference's sampling

    memory = ReplayMemory(args.buffer, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(args.buffer):
        memory.push(rng.standard_normal(args.obs_size).astype(np.float32),
                    rng.uniform(-1, 1, args.action_size).astype(np.float32), float(rng.standard_normal()),
                    rng.standard_normal(args.obs_size).astype(np.float32), 1.0)

    count = 0

    def call(updates: int) -> float:
        nonlocal count
        start = time.perf_counter()
        for _ in range(updates):
            count += 1
            agent.update_parameters(memory, args.batch_size, count)
        return time.perf_counter() - start

    compile_s = call(4)  # both branches of the policy delay compile
    best = min(call(args.updates) for _ in range(args.repeats))
    print(json.dumps(dict(updates_per_s=round(args.updates / best, 2), compile_s=round(compile_s, 1),
                          torch_version=torch.__version__, threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
