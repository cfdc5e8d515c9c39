"""``nncompress benchmark``: OpenVINO CPU latency, throughput and INT8 share of model files.

    nncompress benchmark model.xml model_int8.xml --batch 1 --seconds 5

The first model is the reference: a quantized model (FakeQuantize / QDQ) that is not faster
than it gets a warning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.cli_commands import UsageError, add_quiet_option, usage_errors
from nncompress.cli_commands.quantize import _check_model_path

WARMUP_ITERATIONS = 3
QUANTIZED_OP_TYPES = frozenset({"FakeQuantize", "FakeConvert"})


@dataclass(frozen=True)
class Result:
    path: Path
    quantized: bool
    iterations: int
    median_ms: float
    throughput: float  # samples per second
    int8: Any  # nncompress.torch.export.Int8Summary


def _read_and_reshape(core: Any, path: Path, batch: int) -> Any:
    try:
        model = core.read_model(os.fspath(path))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path}: cannot read the model: {first}") from e
    import openvino as ov

    shapes, dynamic = {}, False
    for i, port in enumerate(model.inputs):
        ps = port.get_partial_shape()
        name = port.get_any_name() if port.get_names() else f"input {i}"
        if ps.rank.is_dynamic:
            raise UsageError(f"{path}: input '{name}' has a dynamic rank; cannot pick a shape to run")
        dims = []
        for axis, d in enumerate(ps):
            if d.is_static:
                dims.append(d.get_length())
            elif axis == 0:
                dims.append(batch)
                dynamic = True
            else:
                raise UsageError(
                    f"{path}: input '{name}' has the dynamic axis {axis} ({ps}); only the batch axis "
                    "(0) may be dynamic: reshape the model to a static shape first"
                )
        shapes[i] = ov.PartialShape(dims)
    if dynamic:
        model.reshape({model.inputs[i]: s for i, s in shapes.items()})
    return model


def _random_inputs(compiled: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    feed = []
    for port in compiled.inputs:
        shape = tuple(port.get_shape())
        try:
            dtype = np.dtype(port.get_element_type().to_dtype())
        except Exception:
            dtype = np.dtype(np.float32)
        if dtype.kind == "f":
            feed.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind == "b":
            feed.append(np.ones(shape, dtype))
        else:
            feed.append(np.zeros(shape, dtype))  # ids / indices: 0 is always valid
    return feed


def _measure(path: Path, args: argparse.Namespace) -> Result:
    import openvino as ov

    from nncompress.torch.export import compile_openvino, int8_summary

    core = ov.Core()
    model = _read_and_reshape(core, path, args.batch)
    quantized = any(op.get_type_name() in QUANTIZED_OP_TYPES for op in model.get_ops())
    compiled = compile_openvino(model, f32=args.f32, config={"PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feed = _random_inputs(compiled)
    batch = int(compiled.inputs[0].get_shape()[0]) if len(compiled.inputs[0].get_shape()) else 1
    for _ in range(WARMUP_ITERATIONS):
        request.infer(feed)
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        request.infer(feed)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= args.seconds and len(times) >= 3:
            break
    total = time.perf_counter() - start
    return Result(
        path=path,
        quantized=quantized,
        iterations=len(times),
        median_ms=statistics.median(times) * 1000.0,
        throughput=batch * len(times) / total,
        int8=int8_summary(compiled),
    )


def _table(results: list[Result]) -> str:
    ref = results[0]
    header = ("model", "type", "median ms", "samples/s", "speed-up", "INT8 layers")
    rows = []
    for r in results:
        rows.append(
            (
                str(r.path),
                "INT8" if r.quantized else "float",
                f"{r.median_ms:.3f}",
                f"{r.throughput:.1f}",
                f"{ref.median_ms / r.median_ms:.2f}x" if r.median_ms > 0 else "-",
                f"{r.int8.int8}/{r.int8.total} ({r.int8.share:.0%})",
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])


@usage_errors
def benchmark_command(args: argparse.Namespace) -> int:
    """Measure every model and print them side by side."""
    if args.batch < 1:
        raise UsageError(f"--batch must be positive, got {args.batch}")
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    paths = [Path(m) for m in args.models]
    for p in paths:
        _check_model_path(p)
    results = []
    for p in paths:
        if not args.quiet:
            print(f"Measuring {p} ...", file=sys.stderr)
        results.append(_measure(p, args))
    precision = "f32" if args.f32 else "default (bf16 where the CPU has it)"
    print(f"OpenVINO CPU, batch {args.batch}, {args.seconds:g} s per model, float precision {precision}")
    print(_table(results))
    ref = results[0]
    for r in results[1:]:
        if r.quantized and r.median_ms >= ref.median_ms:
            print(
                f"warning: {r.path} is quantized (INT8) but not faster than {ref.path}: "
                f"{r.median_ms:.3f} ms vs {ref.median_ms:.3f} ms median; "
                f"{r.int8}",
                file=sys.stderr,
            )
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="OpenVINO CPU latency, throughput and INT8 share of model files",
        description="Run each MODEL with OpenVINO on the CPU (synchronous inferences after a "
        "warm-up) and print median latency, throughput and the share of compute layers that "
        "execute in INT8, side by side. The first model is the reference.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files: OpenVINO .xml or .onnx")
    p.add_argument(
        "--batch", type=int, default=1, metavar="N", help="batch size for dynamic batch axes (default 1)"
    )
    p.add_argument(
        "--seconds", type=float, default=3.0, metavar="S", help="measuring time per model (default 3)"
    )
    p.add_argument(
        "--f32",
        action="store_true",
        help="run float layers in f32 (INFERENCE_PRECISION_HINT=f32) instead of the CPU's default",
    )
    add_quiet_option(p, "print only the table and warnings")
    p.set_defaults(handler=benchmark_command)
