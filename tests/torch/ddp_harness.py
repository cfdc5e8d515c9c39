"""Run a test's worker in several CPU processes joined by torch.distributed over gloo.

The ranks meet through a file store in the test's tmp dir, not a TCP store hosted by rank 0:
with TCP, rank 0 could exit and take the store away while another rank was still tearing its
process group down (seen in CI as a SIGABRT of rank 1). Every rank passes a barrier before it
destroys the group, so none leaves while another still talks to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

GLOO_AVAILABLE = dist.is_available() and dist.is_gloo_available()


@contextlib.contextmanager
def process_group(rank: int, world: int, out_dir: str) -> Iterator[None]:
    """Join the gloo group of ``world`` ranks for the body, one intra-op thread per rank."""
    torch.set_num_threads(1)
    store = Path(out_dir) / "ddp_store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(worker: Callable[..., None], world: int, out_dir: Path, *args: object) -> list[dict]:
    """Spawn ``worker(rank, world, out_dir, *args)`` on each rank; load what each saved as rank<N>.pt."""
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(world, str(out_dir), *args), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(world)]
