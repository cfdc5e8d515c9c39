"""``nncompress quantize``: post-training INT8 quantization of ONNX and OpenVINO model files.

nncompress quantize model.onnx --data calib.npy -o model_int8.onnx
nncompress quantize model.xml --data calib_dir/ --preset mixed -o model_int8.xml
nncompress quantize model.onnx --data images/ --resize crop --mean 0.485,0.456,0.406 \
    --std 0.229,0.224,0.225 -o model_int8.onnx
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.cli_commands import UsageError, add_quiet_option, usage_errors
from nncompress.cli_commands.images import (
    ImagePreprocessing,
    add_image_options,
    image_files,
    load_image_folder,
    spec_from_args,
)

MODEL_SUFFIXES = (".onnx", ".xml")
DATA_HELP = (
    "calibration data: a .npy array (samples along axis 0), a .npz archive (one such array per "
    "model input, keyed by input name), a directory of .npy/.npz files (one sample each) or a "
    "directory of images (searched recursively; see the image options)"
)


@dataclass(frozen=True)
class ModelInput:
    """A model input the calibration data must feed."""

    name: str
    aliases: frozenset[str]
    shape: tuple[int | None, ...] | None  # None: rank unknown; None dims are dynamic

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        if self.shape is None:
            return f"'{self.name}' (shape unknown)"
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' of shape [{dims}]"


# ------------------------------------------------------------------------------ models
def _check_model_path(path: Path) -> str:
    """``"onnx"`` or ``"openvino"`` for an existing model file; ``UsageError`` otherwise."""
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise UsageError(f"{path}: unknown model file type '{path.suffix}'; expected .onnx or .xml")
    if not path.is_file():
        raise UsageError(f"{path}: no such model file")
    return "onnx" if suffix == ".onnx" else "openvino"


def _load_model(path: Path, kind: str) -> Any:
    try:
        if kind == "onnx":
            from nncompress.onnx import load_model

            return load_model(path)
        import openvino as ov

        return ov.Core().read_model(os.fspath(path))
    except Exception as e:  # onnx DecodeError, OpenVINO RuntimeError, ...
        raise UsageError(
            f"{path}: cannot read the model: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from e


def _model_inputs(model: Any, kind: str) -> list[ModelInput]:
    if kind == "onnx":
        inits = {t.name for t in model.graph.initializer}
        out = []
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            shape = None
            tt = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                shape = tuple(
                    d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim
                )
            out.append(ModelInput(vi.name, frozenset([vi.name]), shape))
        return out
    out = []
    for i, port in enumerate(model.inputs):
        names = sorted(port.get_names())
        ps = port.get_partial_shape()
        shape = None
        if ps.rank.is_static:
            shape = tuple(d.get_length() if d.is_static else None for d in ps)
        out.append(ModelInput(names[0] if names else f"input {i}", frozenset(names), shape))
    return out


# ------------------------------------------------------------------------------ data
def _check_sample(sample: np.ndarray, inp: ModelInput, where: str) -> None:
    if inp.shape is None:
        return
    if sample.ndim != len(inp.shape):
        raise UsageError(
            f"{where}: a sample of shape {tuple(sample.shape)} does not fit input {inp.describe()}"
        )
    for axis, (have, want) in enumerate(zip(sample.shape, inp.shape)):
        if want is None:
            continue
        if have != want:
            raise UsageError(
                f"{where}: a sample of shape {tuple(sample.shape)} does not fit input {inp.describe()} "
                f"(axis {axis} is {have}, the model wants {want})"
            )


def _sample_getter(arr: np.ndarray, inp: ModelInput, where: str):
    """How to cut sample ``i`` (with a batch axis of 1) out of an array of samples along axis 0."""
    if arr.ndim == 0:
        raise UsageError(f"{where}: a scalar, expected an array with samples along axis 0")
    if inp.rank is None or inp.rank == arr.ndim:

        def get(i: int) -> np.ndarray:
            return np.asarray(arr[i : i + 1])

    elif inp.rank == arr.ndim - 1:  # the model input has no batch axis

        def get(i: int) -> np.ndarray:
            return np.asarray(arr[i])

    else:
        raise UsageError(
            f"{where}: array of shape {tuple(arr.shape)} does not fit input {inp.describe()}; expected "
            f"N samples along axis 0: an array of rank {inp.rank} (fed in batches of 1) or {inp.rank + 1}"
        )
    _check_sample(get(0), inp, where)
    return get


def _from_arrays(arrays: dict[str, np.ndarray], inputs: list[ModelInput], where: str) -> tuple[int, Any]:
    getters, counts = {}, set()
    for inp in inputs:
        key = next((k for k in arrays if k in inp.aliases), None)
        arr = arrays[key]
        getters[key] = _sample_getter(arr, inp, f"{where} [{key}]" if len(inputs) > 1 else where)
        counts.add(arr.shape[0])
    if len(counts) > 1:
        raise UsageError(f"{where}: the arrays hold different numbers of samples {sorted(counts)}")
    n = counts.pop()

    def items() -> Iterator[Any]:
        for i in range(n):
            if len(inputs) == 1:
                yield next(iter(getters.values()))(i)
            else:
                yield {key: get(i) for key, get in getters.items()}

    return n, items


def _match_npz_keys(keys: Sequence[str], inputs: list[ModelInput], where: str) -> None:
    names = [i.name for i in inputs]
    unknown = [k for k in keys if not any(k in i.aliases for i in inputs)]
    missing = [i.name for i in inputs if not any(k in i.aliases for k in keys)]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"no array for input(s) {missing}")
        if unknown:
            parts.append(f"arrays {unknown} name no model input")
        raise UsageError(f"{where}: {'; '.join(parts)}; the model inputs are {names}")


def _load_file(path: Path) -> Any:
    try:
        return np.load(path, mmap_mode="r" if path.suffix.lower() == ".npy" else None, allow_pickle=False)
    except Exception as e:
        raise UsageError(f"{path}: cannot read the data file: {e}") from e


def load_calibration_data(path: Path, inputs: list[ModelInput]) -> tuple[int, list[Any]]:
    """Number of samples and the calibration items (arrays, or dicts by input name)."""
    if not inputs:
        raise UsageError("the model has no inputs to feed")
    if not path.exists():
        raise UsageError(f"{path}: no such data file or directory")
    suffix = path.suffix.lower()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy", ".npz"))
        if not files:
            raise UsageError(f"{path}: the directory holds no .npy, .npz or image files")
        items = []
        for f in files:
            if f.suffix.lower() == ".npy":
                if len(inputs) > 1:
                    raise UsageError(
                        f"{f}: the model has {len(inputs)} inputs {[i.name for i in inputs]}; "
                        "give one .npz per sample keyed by input name"
                    )
                arrays = {inputs[0].name: np.asarray(_load_file(f))[None]}
            else:
                with _load_file(f) as z:
                    _match_npz_keys(list(z.files), inputs, str(f))
                    arrays = {k: np.asarray(z[k])[None] for k in z.files}
            # each file is one sample: as an array of one sample along a new axis 0
            items.extend(_from_arrays(arrays, inputs, str(f))[1]())
        return len(items), items
    if suffix == ".npy":
        if len(inputs) > 1:
            raise UsageError(
                f"{path}: the model has {len(inputs)} inputs {[i.name for i in inputs]}; "
                "give a .npz with one array per input name"
            )
        n, items = _from_arrays({inputs[0].name: _load_file(path)}, inputs, str(path))
        return n, list(items())
    if suffix == ".npz":
        with _load_file(path) as z:
            _match_npz_keys(list(z.files), inputs, str(path))
            arrays = {k: np.asarray(z[k]) for k in z.files}
        n, items = _from_arrays(arrays, inputs, str(path))
        return n, list(items())
    raise UsageError(f"{path}: unknown data file type '{path.suffix}'; expected .npy, .npz or a directory")


def calibration_items(
    path: Path, inputs: list[ModelInput], spec: ImagePreprocessing | None, limit: int
) -> tuple[int, list[Any]]:
    """Number of samples and the calibration items of ``--data``: arrays, or a folder of images
    (then at most ``limit`` of them are decoded)."""
    images = image_files(path) if path.is_dir() else []
    if not images:
        if spec is not None:
            raise UsageError(
                f"{path}: the image options (--preprocess, --image-size, --mean, ...) need --data to be a "
                "folder of images"
            )
        return load_calibration_data(path, inputs)
    if any(p.suffix.lower() in (".npy", ".npz") for p in path.iterdir()):
        raise UsageError(f"{path}: the directory holds both arrays (.npy/.npz) and images; keep one kind")
    if len(inputs) != 1:
        raise UsageError(
            f"{path}: images feed a model with one input; this one has {len(inputs)} "
            f"{[i.name for i in inputs]}: give a .npz per sample instead"
        )
    return load_image_folder(
        path, images, inputs[0].name, inputs[0].shape, spec or ImagePreprocessing(), limit
    )


# ------------------------------------------------------------------------------ command
def _save(qmodel: Any, kind: str, out: Path) -> None:
    out_kind = "onnx" if out.suffix.lower() == ".onnx" else "openvino"
    if kind == "onnx" and out_kind == "onnx":
        from nncompress.onnx import save_model

        save_model(qmodel, out)
        return
    import openvino as ov

    if kind == "onnx":  # ONNX in, OpenVINO IR out: convert the quantized QDQ model
        from nncompress.onnx import save_model

        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp) / "quantized.onnx"
            save_model(qmodel, tmp_path)
            qmodel = ov.convert_model(os.fspath(tmp_path))
    ov.save_model(qmodel, os.fspath(out))


def _summary(qmodel: Any) -> str:
    from nncompress.quantization.quantize import quantization_report

    report = quantization_report(qmodel)
    return "\n".join(line for line in report.splitlines() if not line.startswith(" "))


@usage_errors
def quantize_command(args: argparse.Namespace) -> int:
    """Quantize a model file with calibration data from files."""
    from nncompress.errors import ScopeError

    model_path, out = Path(args.model), Path(args.output)
    kind = _check_model_path(model_path)
    if out.suffix.lower() not in MODEL_SUFFIXES:
        raise UsageError(f"{out}: unknown output file type '{out.suffix}'; expected .onnx or .xml")
    if kind == "openvino" and out.suffix.lower() == ".onnx":
        raise UsageError(f"{out}: an OpenVINO model cannot be saved as ONNX; use a .xml output")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the output directory {out.parent} does not exist")
    if args.subset_size < 1:
        raise UsageError(f"--subset-size must be positive, got {args.subset_size}")

    for entry in args.ignored_scope or ():
        if entry.startswith("{re}"):
            try:
                re.compile(entry[4:])
            except re.error as e:
                raise UsageError(f"--ignored-scope '{entry}': not a valid regular expression: {e}") from None
    spec = spec_from_args(args)
    model = _load_model(model_path, kind)
    n, items = calibration_items(Path(args.data), _model_inputs(model, kind), spec, args.subset_size)

    import nncompress
    from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters

    ignored = nncompress.IgnoredScope.from_nncf_scopes(args.ignored_scope) if args.ignored_scope else None
    if not args.quiet:
        print(f"Quantizing {model_path} with {min(n, args.subset_size)} of {n} calibration samples")
    try:
        qmodel = nncompress.quantize(
            model,
            nncompress.Dataset(items),
            preset=nncompress.QuantizationPreset(args.preset) if args.preset else None,
            target_device=nncompress.TargetDevice(args.target_device),
            subset_size=min(n, args.subset_size),
            model_type=nncompress.ModelType(args.model_type) if args.model_type else None,
            ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(show_progress=not args.quiet),
        )
    except ScopeError as e:  # an --ignored-scope that names nothing is a bad argument
        raise UsageError(str(e)) from e
    _save(qmodel, kind, out)
    if not args.quiet:
        print(_summary(qmodel))
        print(f"Saved {out}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="post-training INT8 quantization of an ONNX or OpenVINO model file",
        description="Quantize MODEL (.onnx or OpenVINO .xml) to INT8 with calibration data from "
        "NumPy files or a folder of images and save the result (.onnx, or .xml).",
    )
    p.add_argument("model", metavar="MODEL", help="model file: .onnx or OpenVINO .xml")
    p.add_argument("--data", required=True, metavar="PATH", help=DATA_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output model: .onnx or .xml")
    p.add_argument(
        "--subset-size", type=int, default=300, metavar="N", help="calibration samples to use (default 300)"
    )
    p.add_argument(
        "--preset",
        choices=["performance", "mixed"],
        help="performance: symmetric activations; mixed: asymmetric (default: mixed for transformers, "
        "otherwise performance)",
    )
    p.add_argument(
        "--target-device",
        choices=["ANY", "CPU", "GPU", "NPU", "CPU_SPR"],
        default="ANY",
        type=str.upper,
        help="device whose quantization rules to follow (default ANY)",
    )
    p.add_argument(
        "--ignored-scope",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="node names to leave in float; a '{re}' prefix makes a regular expression",
    )
    p.add_argument(
        "--model-type",
        choices=["transformer"],
        help="transformer: SmoothQuant, the transformer placement rules and the mixed preset by default",
    )
    add_quiet_option(p, "no progress bars; print nothing on success")
    add_image_options(p)
    p.set_defaults(handler=quantize_command)
