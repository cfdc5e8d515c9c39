"""Training-time weight sparsity of Keras models: magnitude, RB and const sparsity; strip, export, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
)

import keras  # noqa: E402
from tf_models import (  # noqa: E402
    digits,
    digits_cnn,
    example_config,
    images,
    mobilenet_like,
    resnet_like,
    warm_batchnorm,
)

from nncompress import NNCFConfig  # noqa: E402
from nncompress.errors import (  # noqa: E402
    BackendNotAvailableError,
    CompressionStateError,
    ConfigError,
    ScopeError,
)
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


def kernel_zeros(model: keras.Model) -> float:
    kernels = [v.numpy() for v in model.weights if v.path.endswith("kernel")]
    return sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)


def train_steps(model, batches, labels, lr=0.05, extra_loss=None) -> None:
    opt = keras.optimizers.SGD(lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for x, y in zip(batches, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            if extra_loss is not None:
                loss = loss + extra_loss()
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])


def labels_for(batches, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 10, size=len(b)).astype("int32") for b in batches]


def test_magnitude_schedule_masks_strip_and_statistics():
    model = resnet_like()
    section = {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.2,
        "params": {
            "schedule": "polynomial",
            "power": 1,
            "sparsity_target": 0.6,
            "sparsity_target_epoch": 2,
            "sparsity_freeze_epoch": 3,
        },
    }
    ctrl, cmodel = create_compressed_model(model, config(section))
    assert ctrl.name == "magnitude_sparsity"
    assert len(ctrl.sparsified_weights) == 7  # every conv and the dense layer
    assert ctrl.reached_sparsity == pytest.approx(0.2, abs=0.01)
    batches = images(n=2, batch=4)
    levels = []
    for _ in range(4):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.current_sparsity_level)
        train_steps(cmodel, batches, labels_for(batches))
    assert levels[:3] == pytest.approx([0.2, 0.4, 0.6])
    assert ctrl.frozen  # epoch 3 = sparsity_freeze_epoch
    masks_before = [m.effective_mask().copy() for m in ctrl.masks]
    train_steps(cmodel, batches, labels_for(batches))
    ctrl.scheduler.epoch_step()
    assert all(np.array_equal(a, m.effective_mask()) for a, m in zip(masks_before, ctrl.masks))
    stats = ctrl.statistics().magnitude_sparsity
    assert stats.model_statistics.sparsity_level_for_layers == pytest.approx(0.6, abs=0.01)
    assert len(stats.thresholds) == 7
    assert "magnitude_sparsity" in ctrl.statistics().to_str()

    stripped = ctrl.strip()
    assert not any(isinstance(layer, FakeQuantize) for layer in stripped._flatten_layers())
    assert stripped.count_params() == model.count_params()
    assert kernel_zeros(stripped) >= 0.59
    x = batches[0]
    np.testing.assert_allclose(stripped(x, training=False), cmodel(x, training=False), atol=1e-5)
    # the original model is not changed
    assert kernel_zeros(model) == 0.0


def test_fit_with_callbacks_steps_the_multistep_schedule(tmp_path, caplog):
    x_train, y_train, _, _ = digits()
    model = digits_cnn()
    section = {
        "algorithm": "magnitude_sparsity",
        "params": {
            "schedule": "multistep",
            "multistep_steps": [1, 2],
            "multistep_sparsity_levels": [0.1, 0.3, 0.5],
        },
    }
    ctrl, cmodel = create_compressed_model(model, config(section, (1, 8, 8, 1)))
    cmodel.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    import importlib.util

    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if not tensorboard:
        with pytest.raises(BackendNotAvailableError, match="tensorboard"):
            create_compression_callbacks(ctrl, log_tensorboard=True, log_dir=str(tmp_path))
    callbacks = create_compression_callbacks(
        ctrl, log_tensorboard=tensorboard, log_text=True, log_dir=str(tmp_path)
    )
    with caplog.at_level("INFO", logger="nncompress"):
        history = cmodel.fit(
            x_train[:256], y_train[:256], batch_size=64, epochs=3, verbose=0, callbacks=callbacks
        )
    assert ctrl.scheduler.current_epoch == 2
    assert ctrl.current_sparsity_level == pytest.approx(0.5)
    # masks were computed at the start of the last epoch; the weights trained after it
    assert ctrl.reached_sparsity == pytest.approx(0.5, abs=0.01)
    assert ctrl.compression_stage().name == "FULLY_COMPRESSED"
    assert history.history["compression_rate"] == pytest.approx([0.1, 0.3, 0.5])
    assert "Statistics of the magnitude_sparsity algorithm" in caplog.text
    if tensorboard:
        assert list((tmp_path / "compression").glob("events.out.tfevents.*"))


def test_update_per_optimizer_step_moves_the_level_every_batch_of_fit():
    x_train, y_train, _, _ = digits()
    params = {
        "schedule": "polynomial",
        "power": 1,
        "sparsity_target": 0.6,
        "sparsity_target_epoch": 2,
        "update_per_optimizer_step": True,
        "steps_per_epoch": 4,
    }
    ctrl, cmodel = create_compressed_model(
        digits_cnn(), config({"algorithm": "magnitude_sparsity", "params": params}, (1, 8, 8, 1))
    )
    cmodel.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    levels = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: levels.append(ctrl.current_sparsity_level)
    )
    callbacks = [*create_compression_callbacks(ctrl), record]
    cmodel.fit(x_train[:256], y_train[:256], batch_size=64, epochs=3, verbose=0, callbacks=callbacks)
    assert levels[:9] == pytest.approx([0.075 * i for i in range(9)])
    assert levels[-1] == pytest.approx(0.6) and ctrl.reached_sparsity == pytest.approx(0.6, abs=0.01)


def test_const_sparsity_keeps_existing_zeros_through_training():
    model = mobilenet_like()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            k = layer.kernel.numpy()
            layer.kernel.assign(np.where(rng.random(k.shape) < 0.4, 0.0, k))
    zeros_before = kernel_zeros(model)
    ctrl, cmodel = create_compressed_model(model, config({"algorithm": "const_sparsity"}))
    assert ctrl.compression_rate == pytest.approx(zeros_before, abs=0.02)
    batches = images(n=3, batch=4)
    ctrl.scheduler.epoch_step()
    train_steps(cmodel, batches, labels_for(batches), lr=0.5)
    stripped = ctrl.strip()
    assert kernel_zeros(stripped) == pytest.approx(zeros_before, abs=1e-9)
    with pytest.raises(ConfigError, match="const_sparsity"):
        ctrl.compression_rate = 0.5


def test_rb_sparsity_loss_trains_the_mask_logits():
    model = resnet_like()
    section = {
        "algorithm": "rb_sparsity",
        "sparsity_init": 0.5,
        "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 1, "sparsity_freeze_epoch": 2},
    }
    ctrl, cmodel = create_compressed_model(model, config(section))
    loss = ctrl.loss()
    assert isinstance(loss, tf.Tensor) and float(loss) > 10  # density 1.0, target 0.5
    logits = [m.mask for m in ctrl.masks]
    assert all(v.trainable for v in logits)
    with tf.GradientTape() as tape:
        value = ctrl.loss()
    grads = tape.gradient(value, logits)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    batches = images(n=4, batch=4)
    ctrl.scheduler.epoch_step()
    before = float(np.mean([m.mask.numpy().mean() for m in ctrl.masks]))
    train_steps(cmodel, batches, labels_for(batches), lr=0.5, extra_loss=lambda: 50.0 * ctrl.loss())
    after = float(np.mean([m.mask.numpy().mean() for m in ctrl.masks]))
    assert after < before - 0.01  # the loss pulls the keep probability down
    stats = ctrl.statistics().rb_sparsity
    assert stats.target_sparsity_level == pytest.approx(0.5)
    assert stats.mean_sparse_prob > 0.01
    # masks that crossed zero zero their weights in inference
    rng = np.random.default_rng(0)
    for m in ctrl.masks:
        m.mask.assign(np.where(rng.random(m.mask_shape) < 0.3, -1.0, 1.0).astype("float32"))
    assert ctrl.reached_sparsity == pytest.approx(0.3, abs=0.03)
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()  # epoch 2: frozen, the loss is zero
    assert ctrl.frozen and float(ctrl.loss()) == 0.0
    x = batches[0]
    stripped = ctrl.strip()
    np.testing.assert_allclose(stripped(x, training=False), cmodel(x, training=False), atol=1e-5)
    assert kernel_zeros(stripped) == pytest.approx(ctrl.reached_sparsity, abs=0.02)


def test_sparsity_with_quantization_masks_before_quantizers_and_exports_to_ir(tmp_path):
    import openvino as ov

    model = mobilenet_like()
    warm_batchnorm(model, None)
    compression = [
        {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5},
        {"algorithm": "quantization", "weights": {"per_channel": True}, "initializer": NO_INIT},
    ]
    ctrl, cmodel = create_compressed_model(model, config(compression))
    assert [c.name for c in ctrl.child_ctrls] == ["magnitude_sparsity", "quantization"]
    assert isinstance(ctrl.loss(), tf.Tensor)
    stats = ctrl.statistics()
    assert stats.magnitude_sparsity.model_statistics.sparsity_level_for_layers == pytest.approx(0.5, abs=0.01)
    assert stats.quantization.num_weight_quantizers == 8
    x = images(n=1, batch=2)[0]
    stripped = ctrl.strip()
    assert any(isinstance(layer, FakeQuantize) for layer in stripped._flatten_layers())
    np.testing.assert_allclose(stripped(x, training=False), cmodel(x, training=False), atol=1e-5)
    path = ctrl.export_model(tmp_path / "sparse_int8.xml")
    compiled = ov.Core().compile_model(str(path), "CPU", F32)
    out = compiled(x)[0]
    ref = np.asarray(cmodel(x, training=False))
    assert np.max(np.abs(out - ref)) <= 0.05 * np.max(np.abs(ref)) + 1e-3


def test_float_sparse_export_to_ir_and_savedmodel_carry_the_zeros(tmp_path):
    import openvino as ov

    model = resnet_like()
    ctrl, cmodel = create_compressed_model(
        model,
        config({"algorithm": "magnitude_sparsity", "sparsity_init": 0.7, "params": {"sparsity_target": 0.7}}),
    )
    x = images(n=1, batch=2)[0]
    ref = np.asarray(cmodel(x, training=False))
    xml = ctrl.export_model(tmp_path / "sparse.xml")
    ov_model = ov.Core().read_model(str(xml))
    consts = [
        op.get_data()
        for op in ov_model.get_ops()
        if op.get_type_name() == "Constant" and op.get_data().size > 100
    ]
    zeros = sum(int(np.sum(c == 0)) for c in consts) / sum(c.size for c in consts)
    assert zeros > 0.6
    np.testing.assert_allclose(ov.Core().compile_model(ov_model, "CPU", F32)(x)[0], ref, atol=1e-4)
    saved = ctrl.export_model(tmp_path / "saved", save_format="tf")
    loaded = tf.saved_model.load(str(saved))
    np.testing.assert_allclose(loaded.serve(x), ref, atol=1e-4)


def test_checkpoint_resumes_exactly(tmp_path):
    section = {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.1,
        "params": {"schedule": "polynomial", "sparsity_target": 0.5, "sparsity_target_epoch": 3},
    }
    batches = images(n=2, batch=4)
    labels = labels_for(batches)
    ctrl, cmodel = create_compressed_model(resnet_like(), config(section))
    ctrl.scheduler.epoch_step()
    train_steps(cmodel, batches, labels)
    cmodel.save_weights(tmp_path / "ckpt.weights.h5")
    state = json.loads(json.dumps(ctrl.get_compression_state()))

    ctrl2, cmodel2 = create_compressed_model(resnet_like(), config(section), compression_state=state)
    cmodel2.load_weights(tmp_path / "ckpt.weights.h5")
    assert ctrl2.scheduler.current_epoch == 0
    assert ctrl2.current_sparsity_level == ctrl.current_sparsity_level
    for c, m in ((ctrl, cmodel), (ctrl2, cmodel2)):  # one more epoch on both
        c.scheduler.epoch_step()
        train_steps(m, batches, labels)
    x = batches[0]
    np.testing.assert_allclose(cmodel2(x, training=False), cmodel(x, training=False), atol=1e-6)
    assert all(
        np.array_equal(a.effective_mask(), b.effective_mask()) for a, b in zip(ctrl.masks, ctrl2.masks)
    )


def test_bad_sparsity_configs_and_states_raise_clear_errors():
    model = resnet_like()
    with pytest.raises(ScopeError, match="nope"):
        create_compressed_model(
            model, config({"algorithm": "magnitude_sparsity", "ignored_scopes": ["nope"]})
        )
    with pytest.raises(ConfigError, match="no weight is left to sparsify"):
        create_compressed_model(
            model, config({"algorithm": "magnitude_sparsity", "target_scopes": ["{re}pool"]})
        )
    with pytest.raises(ConfigError, match="one sparsity algorithm"):
        create_compressed_model(
            model, config([{"algorithm": "magnitude_sparsity"}, {"algorithm": "const_sparsity"}])
        )
    with pytest.raises(ConfigError, match="sparsity_target 0.2 is below sparsity_init 0.5"):
        create_compressed_model(
            model,
            config(
                {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5, "params": {"sparsity_target": 0.2}}
            ),
        )
    ctrl, _ = create_compressed_model(
        model, config({"algorithm": "magnitude_sparsity", "ignored_scopes": ["fc"]})
    )
    assert "fc: matches ignored_scopes" in ctrl.describe()
    state = ctrl.get_compression_state()
    with pytest.raises(CompressionStateError, match="do not fit"):
        create_compressed_model(model, config({"algorithm": "magnitude_sparsity"}), compression_state=state)
    with pytest.raises(CompressionStateError, match="saved for algorithms"):
        create_compressed_model(model, config({"algorithm": "rb_sparsity"}), compression_state=state)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        ctrl.set_sparsity_level(1.0)


SPARSITY_CONFIGS = [
    ("tests_tensorflow_resnet50_cifar10_magnitude_sparsity_int8.json", resnet_like),
    ("tensorflow_classification_resnet50_imagenet_magnitude_sparsity_accuracy_aware.json", resnet_like),
    ("tensorflow_classification_mobilenet_v2_imagenet_rb_sparsity.json", mobilenet_like),
    ("tensorflow_classification_mobilenet_v3_large_imagenet_rb_sparsity_int8.json", mobilenet_like),
    ("tensorflow_classification_inception_v3_imagenet_rb_sparsity_int8.json", resnet_like),
    ("tensorflow_classification_resnet50_imagenet_rb_sparsity_int8.json", resnet_like),
    ("tests_tensorflow_sequential_model_cifar10_rb_sparsity.json", mobilenet_like),
    ("tensorflow_object_detection_retinanet_coco_magnitude_sparsity.json", resnet_like),
    ("tensorflow_segmentation_mask_rcnn_coco_magnitude_sparsity.json", mobilenet_like),
]


@pytest.mark.parametrize(("name", "build"), SPARSITY_CONFIGS)
def test_nncf_tensorflow_sparsity_configs_drive_small_keras_models(name, build):
    cfg, sections = example_config(name)
    data = np.concatenate(images(n=2, batch=4))
    register_default_init_args(cfg, tf.data.Dataset.from_tensor_slices(data).batch(4), 4)
    for s in sections:  # small models, few samples
        s.pop("ignored_scopes", None)
        init = s.get("initializer")
        if init:
            if "range" in init:
                init["range"]["num_init_samples"] = 8
            if "batchnorm_adaptation" in init:
                init["batchnorm_adaptation"]["num_bn_adaptation_samples"] = 8
    model = build()
    ctrl, cmodel = create_compressed_model(model, cfg)
    names = [s["algorithm"] for s in sections]
    stats = ctrl.statistics()
    sparsity = next(n for n in names if n.endswith("sparsity"))
    assert stats[sparsity].model_statistics.sparsified_layers_summary
    ctrl.scheduler.epoch_step()
    x = data[:2]
    stripped = ctrl.strip()
    np.testing.assert_allclose(stripped(x, training=False), cmodel(x, training=False), atol=1e-4)
