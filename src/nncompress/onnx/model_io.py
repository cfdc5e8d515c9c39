"""Loading, saving and running ONNX models of any size (external data above 2 GB).

Protobuf cannot serialize a message over 2 GiB, so a model whose initializers are larger is
saved with its tensors in a side file (``save_as_external_data``) and ONNX Runtime sessions are
created from that file path instead of from bytes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx

from nncompress.onnx.graph_builder import LARGE_MODEL_BYTES, model_bytes


def load_model(path: str | os.PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    """``onnx.load`` with external data loaded (tensors next to the model file)."""
    return onnx.load(os.fspath(path), load_external_data=load_external_data)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    external_data: bool | None = None,
    size_threshold: int = 1024,
) -> Path:
    """Save ``model``; with ``external_data`` (default: when the model is over ~1.8 GB) the
    tensors of at least ``size_threshold`` bytes go to ``<file name>.data`` beside it.

    ``model`` is left as it was (its tensors stay in memory).
    """
    path = Path(path)
    if external_data is None:
        external_data = model_bytes(model) > LARGE_MODEL_BYTES
    if not external_data:
        onnx.save_model(model, os.fspath(path))
        return path
    location = path.name + ".data"
    if (path.parent / location).exists():
        (path.parent / location).unlink()  # external data files are appended to
    onnx.save_model(
        model,
        os.fspath(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=size_threshold,
    )
    # save_model moved the tensors out of ``model``: bring them back
    onnx.load_external_data_for_model(model, os.fspath(path.parent))
    return path


def has_unloaded_external_data(model: onnx.ModelProto) -> bool:
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data for t in model.graph.initializer
    )


# ONNX Runtime (1.20+) quantizes the float weights and biases of a Conv/Gemm/MatMul fed by a
# DequantizeLinear to int8/int32 of its own choosing, per tensor ("WeightBiasQuantization"). The
# statistics copy of a quantized model holds its weights as float constants (the DequantizeLinear
# folded away for speed), so ONNX Runtime would re-quantize them: EfficientNet-Lite0's depthwise
# weights came out per-tensor int8, a layer's output mean off by up to 8.6 when its producer's
# output was not itself observed. (Unknown names are ignored by older versions.)
KEEP_FLOAT_WEIGHTS = ["WeightBiasQuantization"]


@contextmanager
def inference_session(
    model: onnx.ModelProto,
    large_model_bytes: int = LARGE_MODEL_BYTES,
    providers: list[str] | None = None,
    intra_op_threads: int = 0,
) -> Iterator[object]:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a private copy: it may be changed).

    Models over ``large_model_bytes`` are written to a temporary directory with external data and
    loaded from the path. ``intra_op_threads`` 0: ONNX Runtime's default (all cores).
    """
    import onnxruntime as ort

    providers = providers or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = intra_op_threads
    # no memory-pattern planning: it reserves each run's whole activation plan up front, and the
    # statistics copy reads dozens of tensors (EfficientNet-Lite0 PTQ peak: +353 -> +293 MiB with
    # one item in flight, +486 -> +408 MiB with two; time unchanged)
    options.enable_mem_pattern = False
    # statistics runs call the session item after item: idle worker threads that spin between
    # calls burn a core (measured: EfficientNet-Lite0 PTQ CPU time 13 s -> 9 s, wall unchanged)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if has_unloaded_external_data(model):
        from nncompress.errors import GraphError

        raise GraphError(
            "The ONNX model references external data that was not loaded; load it with "
            "onnx.load(path) (load_external_data=True) or nncompress.onnx.load_model(path)"
        )
    if model_bytes(model) <= large_model_bytes:
        yield ort.InferenceSession(
            model.SerializeToString(), options, providers=providers, disabled_optimizers=KEEP_FLOAT_WEIGHTS
        )
        return
    with tempfile.TemporaryDirectory(prefix="nncompress_onnx_") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(
            model,
            os.fspath(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            size_threshold=1024,
        )
        session = ort.InferenceSession(
            os.fspath(path), options, providers=providers, disabled_optimizers=KEEP_FLOAT_WEIGHTS
        )
        try:
            yield session
        finally:
            del session
