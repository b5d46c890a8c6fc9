"""``torchrun --standalone --nproc_per_node 2 ddp.py STEPS [SLEEP_MS]``: DDP over gloo, on CPU.

With ``SLEEP_MS``, rank 1 sleeps that long in every forward of the first layer: a straggler
the other rank waits for in each step's all_reduce.
"""

import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def main() -> None:
    steps = int(sys.argv[1])
    sleep_s = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    if sleep_s and dist.get_rank() == 1:
        layers[0].register_forward_pre_hook(lambda module, args: time.sleep(sleep_s))
    model = DistributedDataParallel(layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = TensorDataset(torch.randn(steps * 4, 8), torch.randint(0, 2, (steps * 4,)))
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data))
    for x, y in loader:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"rank {dist.get_rank()} done", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
