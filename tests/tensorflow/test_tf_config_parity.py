"""NNCF 2.x config keys on Keras models: scope_overrides, per-group scopes, RB's learning rate,
and the keys NNCF's own TensorFlow backend never supported (refused with a message saying so)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
)

import keras  # noqa: E402
from tf_models import digits_cnn  # noqa: E402

from nncompress import NNCFConfig  # noqa: E402
from nncompress.errors import ConfigError, ScopeError  # noqa: E402
from nncompress.tensorflow import (  # noqa: E402
    create_compressed_model,
    create_compression_callbacks,
)
from nncompress.tensorflow.layers import QuantizedLayer  # noqa: E402
from nncompress.tensorflow.sparsity import RB_DEFAULT_LR_MULTIPLIER  # noqa: E402

NO_INIT = {"range": {"num_init_samples": 0}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}


def quant_config(**section) -> NNCFConfig:
    return NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 8, 8, 1]},
            "target_device": "TRIAL",
            "compression": {"algorithm": "quantization", "initializer": NO_INIT, **section},
        }
    )


def weight_quantizers(ctrl) -> dict[str, object]:
    return {
        q.graph_name[: -len("/fq_weights")]: q
        for q in ctrl.quantizer_layers()
        if q.graph_name.endswith("/fq_weights")
    }


def activation_consumers(ctrl) -> dict[str, int]:
    """Consumer op -> bits of the activation quantizer feeding it."""
    return {c: p.spec.num_bits for p in ctrl.placement.activation_points for c, _ in p.consumers}


def quantized_kernel(model: keras.Model, name: str) -> np.ndarray:
    layer = next(
        lay
        for lay in model._flatten_layers(include_self=False)
        if isinstance(lay, QuantizedLayer) and lay.graph_name == name
    )
    return np.asarray(layer.quantized_weight())


# ---------------------------------------------------------------------------------------------
# quantization: scope_overrides
# ---------------------------------------------------------------------------------------------
def test_scope_overrides_set_bits_mode_and_granularity_per_layer():
    model = digits_cnn()
    config = quant_config(
        weights={"bits": 8},
        activations={"bits": 8},
        scope_overrides={
            "weights": {
                "fc2": {"bits": 3, "mode": "asymmetric"},
                "{re}conv.*": {"per_channel": False},
            },
            "activations": {"fc2": {"bits": 5}},
        },
    )
    ctrl, qmodel = create_compressed_model(model, config)
    wq = weight_quantizers(ctrl)
    assert (wq["fc2"].num_bits, wq["fc2"].mode) == (3, "asymmetric")
    assert (wq["fc1"].num_bits, wq["fc1"].mode) == (8, "symmetric")
    assert wq["conv1"].axis is None and wq["conv2"].axis is None  # per-tensor by the pattern
    assert wq["fc1"].axis is not None  # the device default (per channel) elsewhere
    consumers = activation_consumers(ctrl)
    assert consumers["fc2"] == 5 and consumers["fc1"] == 8
    # the 3-bit quantizer really computes on 8 levels per output channel; the 8-bit one on more
    fc2, fc1 = quantized_kernel(qmodel, "fc2"), quantized_kernel(qmodel, "fc1")
    assert max(len(np.unique(fc2[:, c])) for c in range(fc2.shape[-1])) <= 8
    assert max(len(np.unique(fc1[:, c])) for c in range(fc1.shape[-1])) > 16
    # the overrides live in the saved placement: a rebuilt model gets the same quantizers
    ctrl2, _ = create_compressed_model(digits_cnn(), config, compression_state=ctrl.get_compression_state())
    rebuilt = {k: (q.num_bits, q.mode, q.axis) for k, q in weight_quantizers(ctrl2).items()}
    assert rebuilt == {k: (q.num_bits, q.mode, q.axis) for k, q in wq.items()}


def test_scope_overrides_errors_name_the_scope():
    model = digits_cnn()
    with pytest.raises(ScopeError, match="'no_such_layer' matched no node"):
        create_compressed_model(
            model, quant_config(scope_overrides={"weights": {"no_such_layer": {"bits": 4}}})
        )
    with pytest.raises(ConfigError, match=r"scope_overrides\.weights\.fc2\.initializer: per-scope range"):
        create_compressed_model(
            model,
            quant_config(
                scope_overrides={"weights": {"fc2": {"initializer": {"range": {"type": "min_max"}}}}}
            ),
        )


# ---------------------------------------------------------------------------------------------
# quantization: per-group scopes (NNCF 2.x: group ignored scopes add, group target scopes replace)
# ---------------------------------------------------------------------------------------------
def test_per_group_ignored_and_target_scopes():
    model = digits_cnn()
    ctrl, _ = create_compressed_model(model, quant_config(weights={"ignored_scopes": ["fc2"]}))
    assert "fc2" not in weight_quantizers(ctrl) and "fc1" in weight_quantizers(ctrl)
    assert "fc2" in activation_consumers(ctrl)  # its input is still quantized

    ctrl, _ = create_compressed_model(model, quant_config(activations={"ignored_scopes": ["{re}fc2"]}))
    assert "fc2" in weight_quantizers(ctrl)
    assert "fc2" not in activation_consumers(ctrl) and "fc1" in activation_consumers(ctrl)

    # section-level ignored scopes still hold for both groups
    ctrl, _ = create_compressed_model(
        model, quant_config(ignored_scopes=["conv1"], weights={"ignored_scopes": ["fc2"]})
    )
    assert set(weight_quantizers(ctrl)) == {"conv2", "fc1"}
    assert "conv1" not in activation_consumers(ctrl)

    # a group's target_scopes replace the section's for that group only
    ctrl, _ = create_compressed_model(
        model, quant_config(target_scopes=["fc1"], weights={"target_scopes": ["conv1", "conv2"]})
    )
    assert set(weight_quantizers(ctrl)) == {"conv1", "conv2"}
    assert set(activation_consumers(ctrl)) == {"fc1"}

    with pytest.raises(ScopeError, match=r"compression\.weights\.ignored_scopes: name 'fc9'"):
        create_compressed_model(model, quant_config(weights={"ignored_scopes": ["fc9"]}))


# ---------------------------------------------------------------------------------------------
# quantization keys NNCF's TensorFlow backend never had
# ---------------------------------------------------------------------------------------------
def test_keys_nncf_tensorflow_never_supported_are_refused_saying_so():
    model = digits_cnn()
    with pytest.raises(ConfigError, match=r"compression\.params: staged quantization .* never supported"):
        create_compressed_model(model, quant_config(params={"weights_quant_start_epoch": 1}))
    with pytest.raises(
        ConfigError, match=r"compression\.compression_lr_multiplier: .*TensorFlow backend never supported"
    ):
        create_compressed_model(model, quant_config(compression_lr_multiplier=10))
    top = quant_config()
    top["compression_lr_multiplier"] = 10
    with pytest.raises(ConfigError, match=r"(?s)^.*- compression_lr_multiplier: .*rb_sparsity section"):
        create_compressed_model(model, top)
    with pytest.raises(ConfigError, match=r"initializer\.precision: mixed-precision"):
        create_compressed_model(model, quant_config(initializer={**NO_INIT, "precision": {"type": "hawq"}}))
    # an empty params section asks for nothing: accepted
    ctrl, _ = create_compressed_model(model, quant_config(params={}))
    assert weight_quantizers(ctrl)


def test_learned_ranking_is_refused_as_nncf_tensorflow_did():
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 8, 8, 1]},
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": 0.5,
                "params": {
                    "prune_first_conv": True,
                    "interlayer_ranking_type": "learned_ranking",
                    "load_ranking_coeffs_path": "coeffs.json",
                },
            },
        }
    )
    with pytest.raises(ConfigError, match=r"interlayer_ranking_type: .*TensorFlow backend never had it"):
        create_compressed_model(digits_cnn(), config)


# ---------------------------------------------------------------------------------------------
# rb_sparsity: learning rate of the mask logits, the loss inside fit
# ---------------------------------------------------------------------------------------------
def rb_config(**section) -> NNCFConfig:
    return NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 8, 8, 1]},
            "compression": {
                "algorithm": "rb_sparsity",
                "sparsity_init": 0.1,
                "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 2, "sparsity_freeze_epoch": 3},
                **section,
            },
        }
    )


def test_rb_reaches_its_target_within_a_few_epochs_of_fit(trained_digits):
    model, (x_train, y_train, x_test, y_test), float_accuracy = trained_digits
    ctrl, cmodel = create_compressed_model(model, rb_config())
    assert [m.lr_multiplier for m in ctrl.masks] == [RB_DEFAULT_LR_MULTIPLIER] * len(ctrl.masks)
    # NNCF's initial keep probability, whatever the variable's scale
    assert ctrl.statistics().rb_sparsity.mean_sparse_prob == pytest.approx(0.01, abs=1e-4)
    # fit minimizes the RB loss with no extra step: it is one of the model's losses
    assert len(cmodel.losses) == 1
    assert float(cmodel.losses[0]) == pytest.approx(float(ctrl.loss()))
    cmodel.compile(
        optimizer=keras.optimizers.Adam(1e-3),  # an ordinary learning rate
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    cmodel.fit(
        x_train, y_train, batch_size=32, epochs=4, verbose=0, callbacks=create_compression_callbacks(ctrl)
    )
    assert ctrl.frozen and ctrl.current_sparsity_level == pytest.approx(0.5)
    assert ctrl.reached_sparsity == pytest.approx(0.5, abs=0.05)
    accuracy = float(np.mean(np.argmax(cmodel.predict(x_test, verbose=0), -1) == y_test))
    assert accuracy > float_accuracy - 0.05
    kernels = [v.numpy() for v in ctrl.strip().weights if v.path.endswith("kernel")]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert zeros == pytest.approx(ctrl.reached_sparsity, abs=0.01)


def test_rb_compression_lr_multiplier_scales_the_logit_steps_of_any_optimizer():
    moves = {}
    for multiplier in (1.0, 10.0):
        for opt in ("sgd", "adam"):
            ctrl, _ = create_compressed_model(digits_cnn(), rb_config(compression_lr_multiplier=multiplier))
            optimizer = keras.optimizers.SGD(100.0) if opt == "sgd" else keras.optimizers.Adam(1e-2)
            variables = [m.mask for m in ctrl.masks]
            before = [np.asarray(m.logits) for m in ctrl.masks]
            with tf.GradientTape() as tape:
                loss = ctrl.loss()
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            after = [np.asarray(m.logits) for m in ctrl.masks]
            moves[multiplier, opt] = sum(float(np.abs(a - b).sum()) for a, b in zip(after, before))
    assert moves[1.0, "sgd"] > 0 and moves[1.0, "adam"] > 0
    assert moves[10.0, "sgd"] == pytest.approx(10 * moves[1.0, "sgd"], rel=1e-3)
    assert moves[10.0, "adam"] == pytest.approx(10 * moves[1.0, "adam"], rel=1e-3)


def test_rb_state_keeps_the_logit_scale(tmp_path):
    config = rb_config(compression_lr_multiplier=20)
    ctrl, cmodel = create_compressed_model(digits_cnn(), config)
    rng = np.random.default_rng(0)
    for m in ctrl.masks:  # logits in [-2, 2]: about half the weights pruned
        m.mask.assign((rng.uniform(-2, 2, m.mask_shape) / m.lr_multiplier).astype("float32"))
    state = ctrl.get_compression_state()
    cmodel.save_weights(tmp_path / "w.weights.h5")
    # a different multiplier in the config does not reinterpret the saved variables
    ctrl2, cmodel2 = create_compressed_model(digits_cnn(), rb_config(), compression_state=state)
    cmodel2.load_weights(tmp_path / "w.weights.h5")
    assert [m.lr_multiplier for m in ctrl2.masks] == [20.0] * len(ctrl.masks)
    assert ctrl2.reached_sparsity == pytest.approx(ctrl.reached_sparsity)
    assert ctrl2.statistics().rb_sparsity.mean_sparse_prob == pytest.approx(
        ctrl.statistics().rb_sparsity.mean_sparse_prob, abs=1e-6
    )
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(cmodel2(x, training=False), cmodel(x, training=False), atol=1e-6)
    with pytest.raises(ConfigError, match="compression_lr_multiplier"):
        create_compressed_model(digits_cnn(), rb_config(compression_lr_multiplier=-1))


# ---------------------------------------------------------------------------------------------
# filter_pruning: grouped convolutions (as torch: whole groups, or the same channels of each group)
# ---------------------------------------------------------------------------------------------
def grouped_model(groups: int, channels: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="a")(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", groups=groups, activation="relu", name="g")(x)
    x = keras.layers.Conv2D(channels, 1, name="b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, name="fc")(x))


@pytest.mark.parametrize(
    ("groups", "channels", "mode", "expected"),
    [
        (4, 8, "whole groups removed", (2, 4, (3, 3, 2, 4))),  # 2 of 4 groups stay, each whole
        (2, 16, "the same channels removed from every group", (2, 8, (3, 3, 4, 8))),
    ],
)
def test_grouped_conv2d_is_pruned_like_torch(groups, channels, mode, expected):
    model = grouped_model(groups, channels)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 8, 8, 3]},
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": 0.5,
                "params": {"prune_first_conv": True},
            },
        }
    )
    ctrl, cmodel = create_compressed_model(model, config)
    assert f"GroupConvolution 'g' (groups={groups}: {mode})" in ctrl.describe_groups()
    stripped = ctrl.strip()
    g = stripped.get_layer("g")
    assert (g.groups, g.filters, tuple(g.kernel.shape)) == expected
    assert stripped.count_params() < model.count_params() / 2
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(stripped(x), cmodel(x, training=False), atol=1e-5)


def test_grouped_conv2d_pruned_and_quantized_strips_to_a_smaller_quantized_model():
    model = grouped_model(4, 8)  # an unnamed input: the stripped copy must keep the graph's input name
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 8, 8, 3]},
            "compression": [
                {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {"prune_first_conv": True}},
                {"algorithm": "quantization", "initializer": NO_INIT},
            ],
        }
    )
    ctrl, cmodel = create_compressed_model(model, config)
    stripped = ctrl.strip()
    g = stripped.get_layer("g")
    assert isinstance(g, QuantizedLayer) and (g.layer.groups, g.layer.filters) == (2, 4)
    assert g.weight_quantizer is not None
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(stripped(x), cmodel(x, training=False), atol=1e-5)
