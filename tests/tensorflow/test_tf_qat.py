"""Training-time quantization of Keras models: create_compressed_model, fit, custom loops, export, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
)

import keras  # noqa: E402
from tf_models import digits_cnn, example_config, images, mobilenet_like, resnet_like, sqnr  # noqa: E402

from nncompress import NNCFConfig  # noqa: E402
from nncompress.errors import (  # noqa: E402
    CompressionStateError,
    ConfigError,
    DatasetError,
    ExportError,
    ScopeError,
)
from nncompress.tensorflow import (  # noqa: E402
    FakeQuantize,
    build_graph,  # noqa: E402
    create_compressed_model,
    create_compression_callbacks,
    register_default_init_args,
)


def digits_config(bits: int = 3, **section) -> NNCFConfig:
    return NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 8, 8, 1]},
            "target_device": "TRIAL",
            "compression": {
                "algorithm": "quantization",
                "weights": {"bits": bits},
                "activations": {"bits": bits},
                "initializer": {
                    "range": {"num_init_samples": 256},
                    "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
                },
                **section,
            },
        }
    )


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def compile_for_training(model, lr: float = 1e-3) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )


def test_qat_with_fit_recovers_the_accuracy_low_bit_ptq_loses(trained_digits):
    model, (x_train, y_train, x_test, y_test), float_acc = trained_digits
    weights_before = [w.copy() for w in model.get_weights()]
    config = digits_config(bits=3)
    loader = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1400, seed=0).batch(64)
    register_default_init_args(config, loader, batch_size=64)
    ctrl, qmodel = create_compressed_model(model, config)
    assert qmodel is not model
    assert all(np.array_equal(a, b) for a, b in zip(weights_before, model.get_weights()))
    ranges = [v for v in qmodel.trainable_variables if "range_" in v.path]
    assert len(ranges) == 8  # 4 weight + 4 activation quantizers, ranges train

    ptq_acc = accuracy(qmodel, x_test, y_test)
    compile_for_training(qmodel)
    qmodel.fit(loader, epochs=2, verbose=0, shuffle=False, callbacks=create_compression_callbacks(ctrl))
    qat_acc = accuracy(qmodel, x_test, y_test)
    assert ptq_acc < float_acc - 0.02, (float_acc, ptq_acc)  # 3 bits cost accuracy ...
    assert qat_acc > ptq_acc + 0.02 and qat_acc > float_acc - 0.03, (
        float_acc,
        ptq_acc,
        qat_acc,
    )  # ... QAT wins it back
    assert ctrl.scheduler.current_epoch == 1 and ctrl.scheduler.current_step == 2 * 22 - 1
    stats = ctrl.statistics().quantization
    assert stats.num_weight_quantizers == 4 and stats.num_activation_quantizers == 4
    assert stats.quantized_ops == stats.quantizable_ops == 4
    assert "3-bit" in ctrl.statistics().to_str()


def test_custom_training_loop_with_gradient_tape_and_compression_loss(trained_digits):
    model, (x_train, y_train, _, _), _ = trained_digits
    ctrl, qmodel = create_compressed_model(
        model, digits_config(bits=4, initializer={"range": {"num_init_samples": 0}})
    )
    fq = next(layer for layer in ctrl.quantizer_layers() if layer.graph_name == "fc1/relu/fq_output_0")
    assert np.allclose(fq.bounds()[1], 1.0)  # no samples: NNCF initial range (fc1 outputs exceed it)
    before = fq.range_max.numpy().copy()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(0.05)
    for _ in range(3):
        ctrl.scheduler.step()
        with tf.GradientTape() as tape:
            loss = loss_fn(y_train[:64], qmodel(x_train[:64], training=True)) + ctrl.loss()
        grads = tape.gradient(loss, qmodel.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, qmodel.trainable_variables))
    assert not np.allclose(fq.range_max.numpy(), before)  # the range itself is learned
    assert float(ctrl.loss()) == 0.0 and ctrl.scheduler.current_step == 2


def test_checkpoint_resumes_exactly(trained_digits, tmp_path):
    model, (x_train, y_train, x_test, _), _ = trained_digits
    config = digits_config(bits=4)
    register_default_init_args(config, tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(64), 64)
    ctrl, qmodel = create_compressed_model(model, config)
    compile_for_training(qmodel)
    qmodel.fit(
        x_train[:256],
        y_train[:256],
        batch_size=64,
        epochs=1,
        verbose=0,
        callbacks=create_compression_callbacks(ctrl),
    )
    qmodel.save_weights(tmp_path / "ckpt.weights.h5")
    (tmp_path / "state.json").write_text(json.dumps(ctrl.get_compression_state()))

    # a fresh, untrained model of the same architecture and the saved state: nothing is initialized
    state = (tmp_path / "state.json").read_text()  # the JSON text works as well as the dict
    ctrl2, resumed = create_compressed_model(
        digits_cnn(seed=5), digits_config(bits=4), compression_state=state
    )
    resumed.load_weights(tmp_path / "ckpt.weights.h5")
    assert np.array_equal(resumed.predict(x_test, verbose=0), qmodel.predict(x_test, verbose=0))
    assert (
        ctrl2.scheduler.get_state() == ctrl.scheduler.get_state() == {"current_step": 3, "current_epoch": 0}
    )
    # and training continues identically
    for m in (qmodel, resumed):
        m.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        m.train_on_batch(x_train[:64], y_train[:64])
    assert np.array_equal(resumed.predict(x_test, verbose=0), qmodel.predict(x_test, verbose=0))


def test_export_to_openvino_ir_and_savedmodel(trained_digits, tmp_path):
    ov = pytest.importorskip("openvino", reason="OpenVINO is needed to check the exported IR")
    model, (x_train, y_train, x_test, _), _ = trained_digits
    config = digits_config(bits=8)
    config["target_device"] = "CPU"
    register_default_init_args(config, tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(64), 64)
    ctrl, qmodel = create_compressed_model(model, config)
    expected = qmodel.predict(x_test, verbose=0)

    xml = ctrl.export_model(tmp_path / "digits_int8.xml")
    compiled = ov.Core().compile_model(str(xml), "CPU")
    precisions = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        precisions.setdefault(info["layerType"].astype(str), set()).add(info["runtimePrecision"].astype(str))
    assert precisions["Convolution"] & {"u8", "i8"} and precisions["FullyConnected"] & {"u8", "i8"}, (
        precisions
    )
    assert sqnr(expected, compiled(x_test)[0]) > 30

    saved = ctrl.export_model(tmp_path / "saved", save_format="tf")
    loaded = tf.saved_model.load(str(saved))  # keep a reference: its variables live in this object
    got = loaded.serve(tf.constant(x_test)).numpy()
    assert np.allclose(got, expected, atol=1e-5)
    for name in ("q.keras", "q.h5"):
        back = keras.models.load_model(ctrl.export_model(tmp_path / name))
        assert np.allclose(back.predict(x_test, verbose=0), expected, atol=1e-5), name
    stripped = ctrl.strip()
    assert stripped is not qmodel and np.array_equal(stripped.predict(x_test, verbose=0), expected)
    with pytest.raises(ExportError, match="frozen_graph"):
        ctrl.export_model(tmp_path / "g.pb", save_format="frozen_graph")


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("tensorflow_classification_mobilenet_v3_small_imagenet_int8.json", mobilenet_like),
        ("tensorflow_classification_inception_v3_imagenet_int8.json", resnet_like),
        ("tests_tensorflow_sequential_int8_accuracy_aware.json", resnet_like),
        ("tensorflow_object_detection_yolo_v4_coco_int8.json", resnet_like),
    ],
)
def test_nncf_tensorflow_example_configs_drive_small_keras_models(name, build):
    config, (section,) = example_config(name)
    section.setdefault("initializer", {}).setdefault("batchnorm_adaptation", {})[
        "num_bn_adaptation_samples"
    ] = 16
    section["initializer"].setdefault("range", {}).setdefault("num_init_samples", 16)
    data = images(n=4, batch=8)
    register_default_init_args(config, tf.data.Dataset.from_tensor_slices(np.concatenate(data)).batch(8), 8)
    model = build()
    settle_batchnorm(model, data)  # as a trained model: BatchNorm statistics fit the data
    ctrl, qmodel = create_compressed_model(model, config)
    stats = ctrl.statistics().quantization
    weighted = [n for n in build_graph(model).nodes if n.has_weights]
    assert stats.num_weight_quantizers == stats.quantizable_ops == stats.quantized_ops == len(weighted)
    assert stats.num_activation_quantizers >= 5
    if section["initializer"]["range"]["num_init_samples"] > 0:  # else ranges start at [0, 1] and train
        assert sqnr(model.predict(data[0], verbose=0), qmodel.predict(data[0], verbose=0)) > 15
    else:
        assert all(
            np.isclose(np.max(q.bounds()[1]), 1.0)
            for q in ctrl.quantizer_layers()
            if not q.graph_name.endswith("weights")
        )


def settle_batchnorm(model, batches, rounds: int = 10) -> None:
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.5
    for _ in range(rounds):
        for b in batches:
            model(b, training=True)
    for layer in norms:
        layer.momentum = 0.99


def test_algorithms_without_a_keras_form_are_refused():
    # sparsity and pruning sections are built by nncompress.tensorflow.algorithms (test_tf_sparsity.py,
    # test_tf_pruning.py); an algorithm the Keras backend lacks names itself and the section
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 16, 16, 3]}, "compression": [{"algorithm": "movement_sparsity"}]}
    )
    with pytest.raises(
        ConfigError, match=r"compression\[0\]\.algorithm: 'movement_sparsity' is not available for Keras"
    ):
        create_compressed_model(resnet_like(), config)


def test_config_and_state_errors_are_clear(trained_digits):
    model = trained_digits[0]
    with pytest.raises(ConfigError, match=r"compression\.params: staged quantization .* never"):
        create_compressed_model(model, digits_config(params={"activations_quant_start_epoch": 1}))
    bad_input = digits_config()
    bad_input["input_info"] = {"sample_size": [1, 28, 28, 1]}
    with pytest.raises(ConfigError, match=r"input_info\.sample_size: \[1, 28, 28, 1\] does not fit"):
        create_compressed_model(model, bad_input)
    with pytest.raises(DatasetError, match="register_default_init_args"):
        create_compressed_model(model, digits_config())
    with pytest.raises(ScopeError, match="'no_such_layer' matched no node"):
        create_compressed_model(model, digits_config(ignored_scopes=["no_such_layer"]))
    with pytest.raises(CompressionStateError, match="builder_state"):
        create_compressed_model(model, digits_config(), compression_state={"ctrl_state": {}})
    ctrl, _ = create_compressed_model(model, digits_config(initializer={"range": {"num_init_samples": 0}}))
    state = ctrl.get_compression_state()
    other = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="fc9")]
    )
    with pytest.raises(CompressionStateError, match="names layer '.*', which the model does not have"):
        create_compressed_model(other, digits_config(), state)


def test_ignored_scopes_by_name_and_pattern(trained_digits):
    model = trained_digits[0]
    section = {"initializer": {"range": {"num_init_samples": 0}}}
    ctrl, qmodel = create_compressed_model(
        model, digits_config(ignored_scopes=["fc2", "{re}conv.*"], **section)
    )
    quantized = {
        layer.graph_name for layer in ctrl.quantizer_layers() if layer.graph_name.endswith("fq_weights")
    }
    assert quantized == {"fc1/fq_weights"}
    ctrl, _ = create_compressed_model(model, digits_config(target_scopes=["fc1"], **section))
    assert {q.graph_name for q in ctrl.quantizer_layers() if q.graph_name.endswith("fq_weights")} == {
        "fc1/fq_weights"
    }
    assert all(isinstance(q, FakeQuantize) for q in ctrl.quantizer_layers())


def test_batchnorm_adaptation_changes_only_batchnorm_statistics(trained_digits):
    model, (x_train, y_train, _, _), _ = trained_digits
    config = digits_config(bits=8)
    config["compression"]["initializer"]["batchnorm_adaptation"]["num_bn_adaptation_samples"] = 128
    shifted = (x_train * 1.5 + 0.2).astype("float32")  # data whose statistics differ from training
    register_default_init_args(config, tf.data.Dataset.from_tensor_slices((shifted, y_train)).batch(64), 64)
    _, qmodel = create_compressed_model(model, config)
    bn_before, bn_after = model.get_layer("bn2"), qmodel.get_layer("bn2")
    assert not np.allclose(bn_before.moving_mean.numpy(), bn_after.moving_mean.numpy())
    assert bn_after.momentum == bn_before.momentum  # restored after adaptation
    assert np.array_equal(bn_before.gamma.numpy(), bn_after.gamma.numpy())
    assert np.array_equal(
        model.get_layer("conv2").kernel.numpy(), qmodel.get_layer("conv2").layer.kernel.numpy()
    )


def test_a_ptq_model_fine_tunes_its_weights_with_fixed_ranges(trained_digits):
    import nncompress
    from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters

    model, (x_train, y_train, _, _), _ = trained_digits
    quiet = AdvancedQuantizationParameters(show_progress=False)
    q = nncompress.quantize(
        model, nncompress.Dataset([x_train[i : i + 64] for i in range(0, 256, 64)]), advanced_parameters=quiet
    )
    ranges = {v.path: v.numpy().copy() for v in q.non_trainable_variables if "range_" in v.path}
    kernel = q.get_layer("conv2").layer.kernel.numpy().copy()
    assert ranges and not [v for v in q.trainable_variables if "range_" in v.path]
    compile_for_training(q, lr=1e-2)
    q.train_on_batch(x_train[:64], y_train[:64])
    assert not np.array_equal(kernel, q.get_layer("conv2").layer.kernel.numpy())
    assert all(
        np.array_equal(ranges[v.path], v.numpy()) for v in q.non_trainable_variables if v.path in ranges
    )
