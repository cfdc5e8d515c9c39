"""Weight sparsity for torch: ``magnitude_sparsity``, ``rb_sparsity`` and ``const_sparsity``.

Each algorithm module registers its builder when imported (``create_compressed_model`` imports
the one a config names); schedules, thresholds and statistics are backend-neutral
(:mod:`nncompress.sparsity`). See ``docs/sparsity.md``.
"""

from nncompress.torch.sparsity.base import SparsifiedWeight, plan_sparsified_weights
from nncompress.torch.sparsity.masks import BinaryMask, RBMask, SparsityMask

__all__ = ["BinaryMask", "RBMask", "SparsifiedWeight", "SparsityMask", "plan_sparsified_weights"]
