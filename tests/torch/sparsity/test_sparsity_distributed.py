"""Sparsity under DistributedDataParallel: 2 CPU processes over gloo, ranks seeded differently.

Magnitude masks (buffers) and RB logits (parameters) must stay equal on every rank: DDP
averages the gradients and broadcasts buffers, and ``ctrl.distributed()`` gives every rank the
random generator of rank 0, so RB samples the same masks everywhere.
"""

from __future__ import annotations

import pytest
import torch
from ddp_harness import GLOO_AVAILABLE, process_group, run_ranks

WORLD = 2


def _worker(rank: int, world: int, out_dir: str) -> None:
    import torch.nn.functional as F
    from qat_digits import DigitsCNN, digits_tensors, loader
    from torch.nn.parallel import DistributedDataParallel

    from nncompress import NNCFConfig
    from nncompress.torch import create_compressed_model

    with process_group(rank, world, out_dir):
        x_tr, y_tr, _, _ = digits_tensors()
        xs, ys = x_tr[rank::world], y_tr[rank::world]
        config = NNCFConfig.from_dict(
            {
                "input_info": {"sample_size": [1, 1, 8, 8]},
                "compression": [
                    {
                        "algorithm": "magnitude_sparsity",
                        "sparsity_init": 0.3,
                        "params": {"sparsity_target": 0.6, "sparsity_target_epoch": 2},
                        "target_scopes": ["{re}.*Conv2d.*"],
                    },
                    {
                        "algorithm": "rb_sparsity",
                        "sparsity_init": 0.5,
                        "params": {"sparsity_target": 0.5},
                        "target_scopes": ["{re}.*Linear.*"],
                    },
                ],
            }
        )
        ctrl, model = create_compressed_model(DigitsCNN(seed=0), config, dump_graphs=False)
        torch.manual_seed(100 + rank)  # different generators until ctrl.distributed()
        ctrl.distributed()
        model.train()
        sampled = model(x_tr[:8]).detach()  # RB masks are sampled: equal only with equal generators
        ddp = DistributedDataParallel(model)
        logits = [p for n, p in ddp.named_parameters() if n.endswith(".mask")]
        others = [p for n, p in ddp.named_parameters() if not n.endswith(".mask")]
        optimizer = torch.optim.Adam([{"params": others, "lr": 1e-3}, {"params": logits, "lr": 1.0}])
        for _ in range(2):
            ctrl.scheduler.epoch_step()
            ddp.train()
            for step, (xb, yb) in enumerate(loader(xs, ys, batch_size=32, shuffle=True, seed=rank)):
                if step == 6:
                    break
                ctrl.scheduler.step()
                optimizer.zero_grad()
                (F.cross_entropy(ddp(xb), yb) + ctrl.loss()).backward()
                optimizer.step()
        rb = next(c for c in ctrl.child_ctrls if c.algorithm_name == "rb_sparsity")
        torch.save(
            {
                "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "consistency": rb.masks_consistency(),
                "sampled": sampled,
                "rb_sparsity": rb.reached_sparsity,
                "magnitude_rate": next(
                    c for c in ctrl.child_ctrls if c.algorithm_name == "magnitude_sparsity"
                ).compression_rate,
            },
            f"{out_dir}/rank{rank}.pt",
        )


@pytest.mark.distributed
@pytest.mark.skipif(not GLOO_AVAILABLE, reason="needs torch.distributed with gloo")
def test_ddp_ranks_keep_equal_masks(tmp_path):
    ranks = run_ranks(_worker, WORLD, tmp_path)
    s0, s1 = ranks[0]["state"], ranks[1]["state"]
    masks = [k for k in s0 if k.endswith("binary_mask") or k.endswith(".mask")]
    assert len(masks) == 3
    # BatchNorm running statistics are each rank's own (DDP broadcasts them before each forward)
    different = [k for k in s0 if "running_" not in k and not torch.equal(s0[k], s1[k])]
    assert not different, f"ranks differ after training: {different}"
    assert ranks[0]["consistency"] == ranks[1]["consistency"] == 1.0
    assert torch.equal(ranks[0]["sampled"], ranks[1]["sampled"])
    assert ranks[0]["magnitude_rate"] == pytest.approx(0.3 + 0.3 * (1 - 0.5**0.9))  # polynomial, epoch 1
    assert ranks[0]["rb_sparsity"] > 0.05  # the RB masks did move
