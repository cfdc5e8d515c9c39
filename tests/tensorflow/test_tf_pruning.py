"""Filter pruning of Keras models: groups, masks during training, physical removal, export, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
)

import keras  # noqa: E402
from tf_models import (  # noqa: E402
    CONFIGS,
    digits,
    digits_cnn,
    example_config,
    images,
    mobilenet_like,
    resnet_like,
    warm_batchnorm,
)

from nncompress import NNCFConfig  # noqa: E402
from nncompress.errors import CompressionStateError, ConfigError, PruningError  # noqa: E402
from nncompress.tensorflow import (  # noqa: E402
    FakeQuantize,
    create_compressed_model,
    create_compression_callbacks,
    register_default_init_args,
)

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU plugin may run bf16 by default
NO_INIT = {"range": {"num_init_samples": 0}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}


def config(compression, size=(1, 16, 16, 3)) -> NNCFConfig:
    return NNCFConfig.from_dict({"input_info": {"sample_size": list(size)}, "compression": compression})


def pruning(init=0.5, **params) -> dict:
    return {"algorithm": "filter_pruning", "pruning_init": init, "params": params}


def kernel_size(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.weights if v.path.endswith("kernel"))


def train_steps(model, batches, lr=0.05) -> None:
    opt = keras.optimizers.SGD(lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    for x in batches:
        y = rng.integers(0, 10, size=len(x)).astype("int32")
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])


def test_mobilenet_pruning_removes_channels_for_real():
    model = mobilenet_like()
    warm_batchnorm(model, None)
    ctrl, cmodel = create_compressed_model(model, config(pruning(0.5)))
    groups = ctrl.describe_groups()
    assert "ir0_expand" in groups and "ir0_dw" in groups  # the depthwise conv follows its producer
    stats = ctrl.statistics().filter_pruning
    # the last group reaches the dense layer through the global pooling (NHWC -> NC)
    assert stats.prunable_groups == 3 and stats.flops_now < stats.flops
    x = images(n=1, batch=2)[0]
    masked = np.asarray(cmodel(x, training=False))
    stripped = ctrl.strip()
    assert stripped.count_params() < model.count_params() * 0.7
    layers = {layer.name: layer for layer in stripped.layers}
    assert layers["ir0_expand"].filters == 8 and layers["ir1_expand"].filters == 12
    assert layers["ir0_dw"].kernel.shape[-2] == 8 and layers["ir0_dw_bn"].gamma.shape[0] == 8
    assert layers["ir0_project"].kernel.shape[-2] == 8
    assert layers["ir1_project"].filters == 6 and layers["fc"].kernel.shape[0] == 6
    np.testing.assert_allclose(stripped(x, training=False), masked, atol=1e-5)
    # statistics count what the stripped model holds (BatchNorm aside: 4 variables per channel)
    bn_removed = 4 * (8 + 8 + 12 + 12 + 6)
    assert stats.params - stats.params_now == model.count_params() - stripped.count_params() - bn_removed


def test_schedule_moves_the_level_and_masks_stay_zero_in_training():
    model = resnet_like()
    section = pruning(
        0.1,
        schedule="exponential",
        pruning_target=0.5,
        pruning_steps=3,
        prune_first_conv=True,
        prune_downsample_convs=True,
    )
    ctrl, cmodel = create_compressed_model(model, config(section))
    assert ctrl.pruning_level == pytest.approx(0.1, abs=0.05)
    batches = images(n=2, batch=4)
    levels = []
    for _ in range(4):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.pruning_level)
        train_steps(cmodel, batches)
    assert levels[0] < levels[1] < levels[2] == pytest.approx(0.5, abs=0.05)
    assert ctrl.compression_stage().name == "FULLY_COMPRESSED"
    # a pruned channel's output is zero in the masked model however the weights trained
    bn = cmodel.get_layer("b1_bn1")
    mask = next(m for m in ctrl.engine.masks if m.graph_name == "b1_bn1/pruning_mask")
    probe = keras.Model(cmodel.inputs, cmodel.get_layer(mask.name).output)
    off = mask.mask.numpy() == 0
    assert off.any() and bn is not None
    assert np.all(np.asarray(probe(batches[0], training=False))[..., off] == 0)
    stripped = ctrl.strip()
    np.testing.assert_allclose(
        stripped(batches[0], training=False), cmodel(batches[0], training=False), atol=1e-5
    )
    assert stripped.count_params() < model.count_params() * 0.6


def test_flops_target_and_compression_rate():
    model = resnet_like()
    section = {
        "algorithm": "filter_pruning",
        "params": {"pruning_flops_target": 0.3, "prune_first_conv": True, "prune_downsample_convs": True},
    }
    ctrl, _ = create_compressed_model(model, config(section))
    assert ctrl.compression_rate == 0.0
    ctrl.compression_rate = 0.3
    assert ctrl.flops_reduction >= 0.3
    assert ctrl.statistics().filter_pruning.flops_reduction == pytest.approx(ctrl.flops_reduction)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        ctrl.set_pruning_level(1.5)


def test_fit_with_callbacks_on_a_sequential_model():
    x_train, y_train, x_test, _ = digits()
    model = digits_cnn()
    section = pruning(0.0, schedule="baseline", pruning_target=0.5, num_init_steps=1)
    ctrl, cmodel = create_compressed_model(model, config(section, (1, 8, 8, 1)))
    # the flatten of a channels-last tensor interleaves positions and channels: fc1 reads every
    # 16th feature of a conv2 channel
    assert "read by: fc1" in ctrl.describe_groups()
    cmodel.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    cmodel.fit(
        x_train[:256],
        y_train[:256],
        batch_size=64,
        epochs=2,
        verbose=0,
        callbacks=create_compression_callbacks(ctrl),
    )
    assert ctrl.pruning_level == pytest.approx(0.5)
    stripped = ctrl.strip()
    layers = {layer.name: layer for layer in stripped.layers}
    assert layers["fc1"].units == 16 and layers["conv2"].filters == 8
    assert layers["fc1"].kernel.shape[0] == 4 * 4 * 8
    np.testing.assert_allclose(
        stripped.predict(x_test[:8], verbose=0), cmodel.predict(x_test[:8], verbose=0), atol=1e-5
    )


def test_pruning_with_per_channel_quantization_exports_a_smaller_int8_ir(tmp_path):
    import openvino as ov

    model = mobilenet_like()
    warm_batchnorm(model, None)
    compression = [
        pruning(0.5),
        {"algorithm": "quantization", "weights": {"per_channel": True}, "initializer": NO_INIT},
    ]
    ctrl, cmodel = create_compressed_model(model, config(compression))
    x = images(n=1, batch=2)[0]
    stripped = ctrl.strip()
    fq = {q.graph_name: q for q in stripped._flatten_layers() if isinstance(q, FakeQuantize)}
    assert np.shape(fq["ir0_expand/fq_weights"].bounds()[1]) == (8,)  # cut with the filters
    ref = np.asarray(cmodel(x, training=False))
    np.testing.assert_allclose(stripped(x, training=False), ref, atol=1e-5)
    small = ctrl.export_model(tmp_path / "pruned_int8.xml")
    out = ov.Core().compile_model(str(small), "CPU", F32)(x)[0]
    assert np.max(np.abs(out - ref)) <= 0.05 * np.max(np.abs(ref)) + 1e-3
    ctrl.compression_rate = 0.0
    full = ctrl.export_model(tmp_path / "full_int8.xml")
    assert small.with_suffix(".bin").stat().st_size < 0.8 * full.with_suffix(".bin").stat().st_size


def test_float_ir_is_smaller_and_matches_keras(tmp_path):
    import openvino as ov

    model = resnet_like()
    warm_batchnorm(model, None)
    section = pruning(0.5, prune_first_conv=True, prune_downsample_convs=True)
    ctrl, cmodel = create_compressed_model(model, config(section))
    x = images(n=1, batch=2)[0]
    xml = ctrl.export_model(tmp_path / "pruned.xml")
    out = ov.Core().compile_model(str(xml), "CPU", F32)(x)[0]
    np.testing.assert_allclose(out, cmodel(x, training=False), atol=1e-4)
    ov.save_model(ov.convert_model(model), str(tmp_path / "dense.xml"), compress_to_fp16=False)
    assert xml.with_suffix(".bin").stat().st_size < 0.6 * (tmp_path / "dense.bin").stat().st_size


def test_checkpoint_resumes_exactly(tmp_path):
    section = pruning(0.2, schedule="exponential", pruning_target=0.5, pruning_steps=3)
    batches = images(n=2, batch=4)
    ctrl, cmodel = create_compressed_model(mobilenet_like(), config(section))
    ctrl.scheduler.epoch_step()
    train_steps(cmodel, batches)
    cmodel.save_weights(tmp_path / "ckpt.weights.h5")
    state = json.loads(json.dumps(ctrl.get_compression_state()))

    ctrl2, cmodel2 = create_compressed_model(mobilenet_like(seed=5), config(section), compression_state=state)
    assert ctrl2.engine.keep.all()  # the masks come with the weights
    cmodel2.load_weights(tmp_path / "ckpt.weights.h5")
    assert np.array_equal(ctrl2.engine.keep, ctrl.engine.keep)
    assert ctrl2.pruning_level == ctrl.pruning_level and ctrl2.scheduler.current_epoch == 0
    for c, m in ((ctrl, cmodel), (ctrl2, cmodel2)):
        c.scheduler.epoch_step()
        train_steps(m, batches)
    x = batches[0]
    np.testing.assert_allclose(cmodel2(x, training=False), cmodel(x, training=False), atol=1e-6)
    np.testing.assert_allclose(ctrl2.strip()(x, training=False), ctrl.strip()(x, training=False), atol=1e-6)


def test_bad_pruning_configs_and_states_raise_clear_errors():
    model = resnet_like()
    with pytest.raises(PruningError, match="no layer of the Keras model can be pruned"):
        create_compressed_model(model, config({**pruning(0.5), "ignored_scopes": ["b1_conv1"]}))
    with pytest.raises(ConfigError, match="learned_ranking"):
        create_compressed_model(
            model,
            config(
                pruning(0.5, interlayer_ranking_type="learned_ranking", load_ranking_coeffs_path="x.json")
            ),
        )
    ctrl, _ = create_compressed_model(mobilenet_like(), config(pruning(0.5)))
    with pytest.raises(CompressionStateError, match="do not fit"):
        create_compressed_model(model, config(pruning(0.5)), compression_state=ctrl.get_compression_state())
    with pytest.raises(CompressionStateError, match="saved for algorithms"):
        create_compressed_model(
            mobilenet_like(),
            config([pruning(0.5), {"algorithm": "quantization", "initializer": NO_INIT}]),
            compression_state=ctrl.get_compression_state(),
        )


PRUNING_CONFIGS = [
    ("tensorflow_classification_resnet50_imagenet_pruning_geometric_median_int8.json", resnet_like),
    ("tensorflow_object_detection_retinanet_coco_pruning_geometric_median_int8.json", mobilenet_like),
    ("tests_tensorflow_sequential_pruning_accuracy_aware.json", mobilenet_like),
]


@pytest.mark.parametrize(("name", "build"), PRUNING_CONFIGS)
def test_nncf_tensorflow_pruning_configs_drive_small_keras_models(name, build):
    cfg, sections = example_config(name)
    data = np.concatenate(images(n=2, batch=4))
    register_default_init_args(cfg, tf.data.Dataset.from_tensor_slices(data).batch(4), 4)
    for s in sections:
        s.pop("ignored_scopes", None)
        if s["algorithm"] == "filter_pruning":  # the small models need these to have prunable groups
            s.setdefault("params", {}).update(prune_first_conv=True, prune_downsample_convs=True)
        init = s.setdefault("initializer", {})
        if s["algorithm"] == "quantization":
            init.setdefault("range", {})["num_init_samples"] = 8
        init.setdefault("batchnorm_adaptation", {})["num_bn_adaptation_samples"] = 8
    model = build()
    ctrl, cmodel = create_compressed_model(model, cfg)
    assert ctrl.statistics().filter_pruning.pruning_level > 0
    ctrl.scheduler.epoch_step()
    x = data[:2]
    stripped = ctrl.strip()
    assert kernel_size(stripped) < kernel_size(model)
    np.testing.assert_allclose(stripped(x, training=False), cmodel(x, training=False), atol=1e-4)


def test_accuracy_aware_loop_drives_keras_pruning():
    from nncompress.common.accuracy_aware_training import create_accuracy_aware_training_loop

    path = CONFIGS / "tests_tensorflow_sequential_pruning_accuracy_aware.json"
    if not path.exists():
        pytest.skip(f"NNCF example config {path} is not available")
    cfg = NNCFConfig.from_json(path)
    cfg["input_info"] = {"sample_size": [1, 8, 8, 1]}
    cfg["accuracy_aware_training"]["params"]["maximal_total_epochs"] = 3
    x_train, y_train, x_test, y_test = digits()
    ctrl, cmodel = create_compressed_model(digits_cnn(), cfg)
    cmodel.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def train_epoch_fn(compression_ctrl, model, epoch=None, optimizer=None, lr_scheduler=None):
        model.fit(x_train[:128], y_train[:128], batch_size=64, epochs=1, verbose=0)

    def validate_fn(model, epoch=None):
        return 100 * float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))

    loop = create_accuracy_aware_training_loop(cfg, ctrl, uncompressed_model_accuracy=90.0)
    result = loop.run(
        cmodel,
        train_epoch_fn=train_epoch_fn,
        validate_fn=validate_fn,
        configure_optimizers_fn=lambda: (None, None),
    )
    assert result is not None
    # the adaptive search raised the level above the configured target (degradation allowed: 100%)
    assert ctrl.compression_rate > 0.1
    assert ctrl.strip().count_params() < digits_cnn().count_params()
