"""One post-training-quantization run of one tool on one ONNX or OpenVINO model, in its own process.

Started by ``benchmarks/ptq_onnx_openvino.py``, with our venv (``--tool ours``: ``import
nncompress as nncf``) or NNCF 3.4's venv (``--tool nncf``: ``import nncf``); everything after the
import line is the same code for both tools.

1. read the model file (``.onnx`` with ``onnx.load``; ``.xml`` with ``openvino.Core().read_model``)
   and the parent's data file (``.npz``: ``calib:<input>`` / ``eval:<input>`` arrays, one row per
   item, and ``eval_ref``, the FP32 outputs);
2. time ``nncf.quantize(model, nncf.Dataset(items), preset=PERFORMANCE, target_device=CPU,
   subset_size=..., fast_bias_correction=True)`` and measure its peak memory (``PeakRSS`` of
   ``_ptq_worker.py``: VmHWM after a clear_refs reset);
3. run the result on the held-out items (ONNX Runtime for ONNX, the OpenVINO CPU plugin for IR) and
   compare its first output with the FP32 reference: SQNR (dB) and top-1 agreement (for a single
   output column, a speech-probability model: agreement of the 0.5 decisions);
4. save the quantized model (``.onnx`` / ``.xml``) for the parent's OpenVINO latency measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ptq_worker import PeakRSS  # noqa: E402  (stdlib only: works in both venvs)


def load_items(data, prefix: str) -> list[dict]:
    """``{input name: row}`` dicts from the ``<prefix>:<input>`` arrays of the data file."""
    import numpy as np

    keys = [k for k in data.files if k.startswith(prefix + ":")]
    n = len(data[keys[0]])
    return [{k.split(":", 1)[1]: np.array(data[k][i]) for k in keys} for i in range(n)]  # 0-d stays 0-d


def fidelity(out, ref) -> dict:
    import numpy as np

    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    noise, signal = float(((out - ref) ** 2).sum()), float((ref**2).sum())
    if ref.shape[1] > 1:
        agree = float((out.argmax(1) == ref.argmax(1)).mean())
    else:  # one probability per item: the decision at 0.5
        agree = float(((out[:, 0] > 0.5) == (ref[:, 0] > 0.5)).mean())
    return {
        "sqnr_db": float("inf") if noise == 0 else 10.0 * float(np.log10(signal / noise)),
        "top1_agreement": agree,
        "max_abs_err": float(np.abs(out - ref).max()),
    }


def run_model(backend: str, model, items: list[dict]):
    """The first output of ``model`` for every item, as rows of one array."""
    import numpy as np

    rows = []
    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for item in items:
            rows.append(np.asarray(session.run(None, item)[0]).reshape(1, -1))
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(model, "CPU")
        request = compiled.create_infer_request()
        for item in items:
            result = request.infer(item)
            rows.append(np.asarray(result[compiled.outputs[0]]).reshape(1, -1))
    return np.concatenate(rows)


def count_quantizers(backend: str, model) -> int:
    if backend == "onnx":

        def walk(graph) -> int:
            n = 0
            for node in graph.node:
                n += node.op_type == "QuantizeLinear"
                for a in node.attribute:
                    if a.type == a.GRAPH:
                        n += walk(a.g)
            return n

        return walk(model.graph)

    def walk_ov(m) -> int:
        n = 0
        for op in m.get_ordered_ops():
            n += op.get_type_name() == "FakeQuantize"
            if op.get_type_name() == "If":
                n += walk_ov(op.get_function(0)) + walk_ov(op.get_function(1))
        return n

    return walk_ov(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tool", choices=["ours", "nncf"], required=True)
    p.add_argument("--model", required=True, help=".onnx or .xml file")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--model-out", required=True, help="where the quantized model goes (.onnx / .xml)")
    p.add_argument("--subset-size", type=int, default=300)
    args = p.parse_args()
    backend = "onnx" if args.model.endswith(".onnx") else "openvino"
    res: dict = {
        "tool": args.tool,
        "backend": backend,
        "model": args.model,
        "python": platform.python_version(),
    }
    res["errors"] = {}
    try:
        import numpy as np

        t0 = time.perf_counter()
        if args.tool == "ours":
            import nncompress as nncf
        else:
            import nncf
        nncf.quantize, nncf.Dataset  # noqa: B018  (lazy loading inside the import time)
        res["import_s"] = time.perf_counter() - t0
        res["tool_version"] = getattr(nncf, "__version__", "?")
        if backend == "onnx":
            import onnx

            model = onnx.load(args.model)
        else:
            import openvino as ov

            model = ov.Core().read_model(args.model)
        data = np.load(args.data)
        calib, held_out = load_items(data, "calib"), load_items(data, "eval")
        subset = min(args.subset_size, len(calib))
        res["subset_size"] = subset
        res["loadavg_before"] = list(os.getloadavg())
        c0 = time.process_time()
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            quantized = nncf.quantize(
                model,
                nncf.Dataset(calib),
                preset=nncf.QuantizationPreset.PERFORMANCE,
                target_device=nncf.TargetDevice.CPU,
                subset_size=subset,
                fast_bias_correction=True,
            )
            res["quantize_s"] = time.perf_counter() - t0
        res["quantize_cpu_s"] = time.process_time() - c0
        res["quantize_peak_extra_mb"] = peak.peak_mb - peak.before_mb
        res["memory_method"] = peak.method
        res["quantizers"] = count_quantizers(backend, quantized)
        res["fidelity"] = fidelity(run_model(backend, quantized, held_out), data["eval_ref"])
        if backend == "onnx":
            onnx.save(quantized, args.model_out)
        else:
            ov.save_model(quantized, args.model_out, compress_to_fp16=False)
        res["model_out"] = args.model_out
    except Exception as exc:  # the parent reports it; the table shows what ran
        res["errors"]["quantize"] = f"{type(exc).__name__}: {exc}"
        res["errors"]["quantize_traceback"] = traceback.format_exc()
        print(traceback.format_exc(), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    if res["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
