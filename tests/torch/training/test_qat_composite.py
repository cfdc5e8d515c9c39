"""Several algorithms on one model: the builder registry and the composite controller.

The second algorithm is a trivial one defined here ("const_sparsity" masking half of the fc
weight, with a constant loss and its own scheduler), registered in place of the built-in
const_sparsity for the duration of a test.
"""

from __future__ import annotations

import pytest
import torch
from qat_digits import DigitsCNN, loader
from torch import nn

from nncompress import NNCFConfig
from nncompress.api.compression import (
    BaseCompressionScheduler,
    CompressionLoss,
    CompressionStage,
    NNCFStatistics,
    Statistics,
)
from nncompress.errors import CompressionStateError
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.torch import create_compressed_model, register_default_init_args
from nncompress.torch.algorithms import (
    PTCompositeCompressionAlgorithmController,
    PTCompressionAlgorithmBuilder,
    PTCompressionAlgorithmController,
    register_algorithm_builder,
    unregister_algorithm_builder,
)
from nncompress.torch.quantizers import BaseQuantizer

FC_WEIGHT = TargetPoint(TargetType.WEIGHT, "DigitsCNN/Linear[fc]/linear_0", 1)


class Mask(nn.Module):
    def __init__(self, shape):
        super().__init__()
        mask = torch.ones(shape)
        mask[: shape[0] // 2] = 0
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


class HalfLoss(CompressionLoss):
    def calculate(self):
        return torch.tensor(0.5)


class MaskStats(Statistics):
    def __init__(self, zeros: int):
        self.zeros = zeros

    def to_str(self) -> str:
        return f"masked weights: {self.zeros}"


class MaskController(PTCompressionAlgorithmController):
    def __init__(self, model, builder, context):
        super().__init__(model, builder.algorithm_name, builder.get_state(), context)
        self._loss = HalfLoss()
        self._scheduler = BaseCompressionScheduler()
        self.mask = builder.mask

    def compression_stage(self):
        return CompressionStage.PARTIALLY_COMPRESSED

    def statistics(self, quickly_collected_only=False):
        stats = NNCFStatistics()
        stats.register(self.algorithm_name, MaskStats(int((self.mask.mask == 0).sum())))
        return stats


class MaskBuilder(PTCompressionAlgorithmBuilder):
    priority = 10

    def get_state(self):
        return {"node": FC_WEIGHT.node}

    def apply_to(self, model, context):
        if self._state is not None and self._state.get("node") != FC_WEIGHT.node:
            raise CompressionStateError(f"no node {self._state.get('node')}")
        self.mask = Mask(context.graph.node(FC_WEIGHT.node).weights[FC_WEIGHT.port].shape)
        model.nncf.insert(FC_WEIGHT, self.mask)

    def build_controller(self, model, context):
        return MaskController(model, self, context)


@pytest.fixture
def mask_algorithm():
    # replaces the built-in const_sparsity for the test; unregistering brings the built-in back
    register_algorithm_builder("const_sparsity", replace=True)(MaskBuilder)
    yield
    unregister_algorithm_builder("const_sparsity")


def _config() -> NNCFConfig:
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": [
                {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 32}}},
                {"algorithm": "const_sparsity"},
            ],
        }
    )
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return register_default_init_args(config, loader(x, torch.zeros(32, dtype=torch.long), batch_size=16))


def test_composite_controller_combines_two_algorithms(mask_algorithm):
    ctrl, model = create_compressed_model(DigitsCNN(), _config())
    assert isinstance(ctrl, PTCompositeCompressionAlgorithmController)
    assert [c.name for c in ctrl.child_ctrls] == ["const_sparsity", "quantization"]
    # masks come first on a shared tensor, whatever the order of the config sections
    hooks = model.nncf.hook_manager.hooks_at(FC_WEIGHT)
    assert [type(h).__name__ for h in hooks] == ["Mask", "SymmetricQuantizer"]
    # the quantizer's range was initialized on the masked weight: half of its channels are zero
    scales = hooks[1].scale.detach().reshape(-1)
    assert torch.all(scales[:5] < 1e-4) and torch.all(scales[5:] > 1e-3)

    assert float(ctrl.loss()) == 0.5
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    ctrl.scheduler.step()
    assert [(c.scheduler.current_epoch, c.scheduler.current_step) for c in ctrl.child_ctrls] == [
        (0, 1),
        (0, 1),
    ]
    stats = ctrl.statistics()
    assert stats.const_sparsity.zeros == 5 * 512 and stats.quantization.num_weight_quantizers == 3
    assert "const_sparsity" in stats.to_str() and "Weight quantizers: 3" in stats.to_str()

    state = ctrl.get_compression_state()
    assert set(state["builder_state"]) == set(state["ctrl_state"]) == {"quantization", "const_sparsity"}
    ctrl2, model2 = create_compressed_model(DigitsCNN(seed=5), _config(), compression_state=state)
    model2.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 8, 8)
    model.eval(), model2.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model2(x))
    assert [(c.scheduler.current_epoch, c.scheduler.current_step) for c in ctrl2.child_ctrls] == [
        (0, 1),
        (0, 1),
    ]
    assert (ctrl2.scheduler.current_epoch, ctrl2.scheduler.current_step) == (0, 1)

    state["builder_state"]["const_sparsity"]["node"] = "elsewhere"
    with pytest.raises(CompressionStateError, match="elsewhere"):
        create_compressed_model(DigitsCNN(), _config(), compression_state=state)

    stripped = ctrl.strip()
    assert stripped is not model
    assert all(
        not p.requires_grad
        for m in stripped.modules()
        if isinstance(m, BaseQuantizer)
        for p in m.parameters()
    )


def test_registry_rejects_a_second_builder_for_a_name(mask_algorithm):
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm_builder("const_sparsity")(type("Other", (MaskBuilder,), {}))
