"""One post-training-quantization run of one tool on one model, in its own process.

Started by ``benchmarks/ptq_torch.py``, once with our venv (``--tool ours``: ``import nncompress
as nncf``) and once with the peer venv (``--tool nncf``: ``import nncf``). Everything after the
import line is the same code for both tools: our API mirrors NNCF's.

Steps:
1. load the model (examples/models.py) and the prepared data file (calibration items, held-out
   inputs, FP32 reference logits, labels) written by the parent;
2. time ``nncf.quantize(model, nncf.Dataset(items, transform_fn), preset=PERFORMANCE,
   target_device=CPU, subset_size=..., fast_bias_correction=True)`` and measure its peak memory;
3. fidelity of the returned fake-quantized torch model against the FP32 reference on held-out
   data: output SQNR (dB), top-1 agreement, and accuracy where labels exist;
4. export to OpenVINO IR with ``openvino.convert_model(quantized, example_input=...)`` and save
   it (FP32 weights, no fp16 compression) for the parent, which measures all the latencies in one
   process, interleaved, so that machine noise hits both tools alike.

Peak memory: Linux's per-process high-water mark. Just before the call the worker writes ``5`` to
``/proc/self/clear_refs``, which resets ``VmHWM`` to the current RSS; after the call ``VmHWM`` is
the peak resident set size during quantization (anything the tool allocates: Python objects,
torch tensors, native buffers). ``quantize_peak_extra_mb`` = peak - RSS just before the call is
the number compared. Where clear_refs cannot be written, a thread samples ``VmRSS`` every 2 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))


# ----------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident set size (MiB) over a ``with`` block; see the module docstring."""

    def __init__(self) -> None:
        self.method = ""
        self.before_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled_kb = 0

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.before_mb = (_status_kb("VmRSS") or 0) / 1024
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM after clear_refs reset"
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self._sampled_kb = _status_kb("VmRSS") or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled_kb = max(self._sampled_kb, _status_kb("VmRSS") or 0)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._sampled_kb, _status_kb("VmRSS") or 0) / 1024
        else:
            self.peak_mb = (_status_kb("VmHWM") or 0) / 1024


# ----------------------------------------------------------------------------------------------
# fidelity
# ----------------------------------------------------------------------------------------------


def _forward(model, x, batch: int = 50):
    import torch

    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def fidelity(out, ref, labels=None) -> dict:
    """Output SQNR (dB) and top-1 agreement of ``out`` vs ``ref``; accuracy with ``labels``."""
    import torch

    out = out.double()
    ref = ref.double()
    noise = float(((out - ref) ** 2).sum())
    signal = float((ref**2).sum())
    res = {
        "sqnr_db": float("inf") if noise == 0 else 10.0 * float(torch.log10(torch.tensor(signal / noise))),
        "top1_agreement": float((out.argmax(1) == ref.argmax(1)).double().mean()),
        "max_abs_err": float((out - ref).abs().max()),
    }
    if labels is not None:
        res["accuracy"] = float((out.argmax(1) == labels).double().mean())
    return res


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


def build_model(name: str, weights: str | None):
    import torch
    from models import DigitsCNN, DigitsResNet, load_efficientnet_lite0

    if name == "effnet":
        return load_efficientnet_lite0(pretrained=True)
    cls = {"digits": DigitsCNN, "digits_resnet": DigitsResNet}[name]
    model = cls()
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tool", choices=["ours", "nncf"], required=True)
    parser.add_argument("--model", choices=["digits", "digits_resnet", "effnet"], required=True)
    parser.add_argument("--weights", help="state_dict file for the digits models")
    parser.add_argument("--data", required=True, help="data file prepared by the parent (torch.save)")
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--ir-out", help="where to save the INT8 OpenVINO IR (.xml)")
    parser.add_argument("--subset-size", type=int, default=300)
    parser.add_argument("--preset", choices=["performance", "mixed"], default="performance")
    parser.add_argument("--target-device", default="CPU")
    parser.add_argument("--no-fast-bias-correction", action="store_true")
    args = parser.parse_args()

    result: dict = {
        "tool": args.tool,
        "model": args.model,
        "python": platform.python_version(),
        "pid": os.getpid(),
        "errors": {},
    }

    def dump() -> None:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))

    # --- the tool: the only line that differs between the two runs --------------------------
    t0 = time.perf_counter()
    if args.tool == "nncf":
        import nncf
    else:
        try:
            import nncompress as nncf
        except ImportError:  # not installed in this venv: use the working tree
            sys.path.insert(0, str(REPO / "src"))
            import nncompress as nncf
    quantize, Dataset = nncf.quantize, nncf.Dataset  # lazy modules load here, not in the timing
    result["import_s"] = time.perf_counter() - t0
    result["tool_version"] = getattr(nncf, "__version__", "?")

    import openvino as ov
    import torch

    result["torch_version"] = torch.__version__
    result["openvino_version"] = ov.get_version()
    result["torch_threads"] = torch.get_num_threads()
    torch.manual_seed(0)

    # --- model and data ------------------------------------------------------------------------
    model = build_model(args.model, args.weights)
    data = torch.load(args.data, map_location="cpu", weights_only=True)
    calib_x = data["calib_x"]
    calib_y = data.get("calib_y")
    eval_x, eval_ref, eval_y = data["eval_x"], data["eval_ref"], data.get("eval_y")
    # items as a user's loader yields them, (image, label); transform_fn picks the model input
    items = [
        (calib_x[i : i + 1], int(calib_y[i]) if calib_y is not None else -1) for i in range(len(calib_x))
    ]
    subset_size = min(args.subset_size, len(items))
    result.update(
        n_params=sum(p.numel() for p in model.parameters()),
        n_calib_items=len(items),
        subset_size=subset_size,
        n_eval=len(eval_x),
        input_shape=list(calib_x.shape[1:]),
    )
    with torch.no_grad():
        probe = eval_x[:8]
        fp32_probe = model(probe)
    result["fp32_matches_reference"] = bool(torch.allclose(fp32_probe, eval_ref[:8], atol=1e-4, rtol=1e-4))

    def transform_fn(item):
        return item[0]

    kwargs = dict(
        preset=getattr(nncf.QuantizationPreset, args.preset.upper()),
        target_device=getattr(nncf.TargetDevice, args.target_device.upper()),
        subset_size=subset_size,
        fast_bias_correction=not args.no_fast_bias_correction,
    )
    result["quantize_kwargs"] = {k: str(v) for k, v in kwargs.items()}

    # --- quantize: wall time, CPU time, peak memory ---------------------------------------------
    dataset = Dataset(items, transform_fn)
    result["loadavg_before"] = list(os.getloadavg())  # other processes on the machine skew the timing
    with PeakRSS() as mem:
        c0, t0 = time.process_time(), time.perf_counter()
        quantized = quantize(model, dataset, **kwargs)
        result["quantize_s"] = time.perf_counter() - t0
        result["quantize_cpu_s"] = time.process_time() - c0
    result.update(
        loadavg_after=list(os.getloadavg()),
        memory_method=mem.method,
        rss_before_mb=mem.before_mb,
        quantize_peak_rss_mb=mem.peak_mb,
        quantize_peak_extra_mb=max(0.0, mem.peak_mb - mem.before_mb),
        returned_type=f"{type(quantized).__module__}.{type(quantized).__qualname__}",
        returned_is_input=quantized is model,
        returned_isinstance_of_input_class=isinstance(quantized, type(model)),
    )
    with torch.no_grad():
        result["input_model_unchanged"] = bool(torch.equal(model(probe), fp32_probe))
    dump()

    # --- fidelity of the fake-quantized torch model ----------------------------------------------
    quantized.eval()
    t0 = time.perf_counter()
    out = _forward(quantized, eval_x)
    result["torch_int8_eval_s"] = time.perf_counter() - t0
    result["torch_fidelity"] = fidelity(out, eval_ref, eval_y)
    result["torch_fidelity_fp32"] = fidelity(eval_ref, eval_ref, eval_y)
    dump()

    # --- OpenVINO export ---------------------------------------------------------------------------
    try:
        t0 = time.perf_counter()
        ov_model = ov.convert_model(quantized, example_input=calib_x[:1])
        result["export_s"] = time.perf_counter() - t0
        ops: dict[str, int] = {}
        for op in ov_model.get_ops():
            ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
        result["ir_op_counts"] = dict(sorted(ops.items()))
        result["ir_fake_quantize_count"] = ops.get("FakeQuantize", 0)
        if args.ir_out:
            ov.save_model(ov_model, args.ir_out, compress_to_fp16=False)
            result["ir_path"] = args.ir_out
    except Exception as exc:  # recorded, not fatal: the parent reports it
        result["errors"]["export"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["errors"]["export_traceback"] = traceback.format_exc()
    dump()


if __name__ == "__main__":
    main()
