"""An ordinary training script: no trainprof in it. Usage: train.py [STEPS] [options]

Options (each ``--name value``): ``--sleep-ms`` per item in the dataset (default 0),
``--workers`` DataLoader workers (default 0), ``--optimizers`` 1 or 2, ``--fail-at`` raise
ZeroDivisionError at that step, ``--exit`` sys.exit with that status after training,
``--stall-at`` sleep ``--stall-ms`` (default 500) in the training loop at that step; flag
``--spawn``: start the DataLoader workers with multiprocessing's spawn rather than fork.
"""

import argparse
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Slow(Dataset):
    def __init__(self, size: int, sleep_ms: float) -> None:
        self.size = size
        self.sleep_s = sleep_ms / 1000

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return torch.full((8,), float(index)), index % 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("steps", type=int, nargs="?", default=8)
    parser.add_argument("--sleep-ms", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--optimizers", type=int, default=1)
    parser.add_argument("--fail-at", type=int, default=-1)
    parser.add_argument("--exit", type=int, default=None)
    parser.add_argument("--stall-at", type=int, default=-1)
    parser.add_argument("--stall-ms", type=float, default=500.0)
    parser.add_argument("--spawn", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: one thread, no spinning OpenMP pool
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    if args.optimizers == 2:
        optimizers = [
            torch.optim.Adam(model[0].parameters(), lr=1e-3),
            torch.optim.SGD(model[2].parameters(), lr=1e-2),
        ]
    else:
        optimizers = [torch.optim.Adam(model.parameters(), lr=1e-3)]
    loader = DataLoader(
        Slow(args.steps * 2, args.sleep_ms),
        batch_size=2,
        num_workers=args.workers,
        multiprocessing_context="spawn" if args.spawn else None,
    )
    for step, (x, y) in enumerate(loader):
        if step == args.fail_at:
            print(1 / 0)
        if step == args.stall_at:
            time.sleep(args.stall_ms / 1000)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    print(f"trained {step + 1} steps, loss {loss.item():.3f}")
    if args.exit is not None:
        sys.exit(args.exit)


if __name__ == "__main__":
    main()
