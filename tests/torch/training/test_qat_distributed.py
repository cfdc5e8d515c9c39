"""Quantization-aware training with DistributedDataParallel: 2 CPU processes over gloo.

Each rank calibrates on its own shard of the data; range initialization all-reduces the
statistics, so every rank starts with the same quantizers, and DDP keeps them equal in training.
"""

from __future__ import annotations

import pytest
import torch
from ddp_harness import GLOO_AVAILABLE, process_group, run_ranks

WORLD = 2
INIT_SAMPLES = 128


def _worker(rank: int, world: int, out_dir: str) -> None:
    import torch.nn.functional as F
    from qat_digits import DigitsCNN, digits_tensors, loader, qat_config
    from torch.nn.parallel import DistributedDataParallel

    from nncompress import NNCFConfig
    from nncompress.torch import create_compressed_model, register_default_init_args

    with process_group(rank, world, out_dir):
        x_tr, y_tr, _, _ = digits_tensors()
        xs, ys = x_tr[rank::world], y_tr[rank::world]
        if rank == 1:
            xs = xs * 1.5  # a shard with a visibly wider range
        config = NNCFConfig.from_dict(
            qat_config(
                initializer={
                    "range": {"num_init_samples": INIT_SAMPLES, "type": "min_max"},
                    "batchnorm_adaptation": {"num_bn_adaptation_samples": INIT_SAMPLES},
                }
            )
        )
        register_default_init_args(config, loader(xs, ys, batch_size=32))
        ctrl, model = create_compressed_model(DigitsCNN(seed=0), config, dump_graphs=False)
        after_init = {k: v.detach().clone() for k, v in model.state_dict().items()}

        ctrl.distributed()
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
        ddp.train()
        for step, (xb, yb) in enumerate(loader(xs, ys, batch_size=32, shuffle=True, seed=rank)):
            if step == 4:
                break
            ctrl.scheduler.step()
            optimizer.zero_grad()
            (F.cross_entropy(ddp(xb), yb) + ctrl.loss()).backward()
            optimizer.step()
        torch.save(
            {
                "local_max": float(xs[:INIT_SAMPLES].abs().max()),
                "init": after_init,
                "trained": {k: v.detach().clone() for k, v in model.named_parameters()},
                "input_quantizer": ctrl.all_quantizations["DigitsCNN/nncf_model_input_0|OUTPUT"]
                .scale.detach()
                .clone(),
            },
            f"{out_dir}/rank{rank}.pt",
        )


@pytest.mark.distributed
@pytest.mark.skipif(not GLOO_AVAILABLE, reason="needs torch.distributed with gloo")
def test_ddp_ranks_share_quantizer_parameters(tmp_path):
    ranks = run_ranks(_worker, WORLD, tmp_path)

    # the shards differ, yet range init gave every rank the same quantizers (and BN statistics)
    assert ranks[1]["local_max"] > 1.2 * ranks[0]["local_max"]
    assert float(ranks[0]["input_quantizer"]) == pytest.approx(max(r["local_max"] for r in ranks), rel=1e-5)
    init0, init1 = ranks[0]["init"], ranks[1]["init"]
    assert init0.keys() == init1.keys()
    quantizer_keys = [k for k in init0 if k.startswith("_nncf.")]
    assert len(quantizer_keys) > 10
    different = [k for k in init0 if not torch.equal(init0[k], init1[k])]
    assert not different, f"ranks differ after initialization: {different}"

    # DDP keeps them equal through training, and training moved them
    trained0, trained1 = ranks[0]["trained"], ranks[1]["trained"]
    assert all(torch.equal(trained0[k], trained1[k]) for k in trained0)
    assert any(not torch.equal(trained0[k], init0[k]) for k in trained0 if k.startswith("_nncf."))
