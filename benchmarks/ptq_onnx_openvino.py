"""ONNX and OpenVINO post-training quantization, side by side: nncompress vs NNCF 3.4, same model
files, same data and calibration subset, in one run.

    .venv/bin/python benchmarks/ptq_onnx_openvino.py                # digits, EfficientNet-Lite0, silero-vad
    .venv/bin/python benchmarks/ptq_onnx_openvino.py --quick        # fewer crops, shorter latency blocks
    .venv/bin/python benchmarks/ptq_onnx_openvino.py --only ours --models digits
    .venv/bin/python benchmarks/ptq_onnx_openvino.py --backends onnx
    .venv/bin/python benchmarks/ptq_onnx_openvino.py --repeats 3   # timings: the fastest of 3 runs per tool

For each model this parent process
1. prepares the model files and data once (``benchmarks/.cache/ptq_onnx_openvino/``):
   ``digits`` (``DigitsCNN`` trained in the run, as in ``ptq_torch.py``) and ``effnet``
   (EfficientNet-Lite0 with its real ImageNet weights) are exported with ``torch.onnx.export``
   (opset 17) and the ``.onnx`` converted to an IR (``openvino.convert_model``, FP32 weights);
   ``silero`` is ``silero_vad_16k_op15.onnx`` shipped by the ``silero-vad`` package (``If`` ops,
   LSTM state inputs) and its IR (static shapes: OpenVINO's ONNX frontend needs them for the If
   branches). Calibration items and held-out items with the FP32 outputs go to one ``.npz``;
2. runs ``benchmarks/_ptq_onnx_ov_worker.py`` in a fresh process per tool and backend (our venv:
   ``import nncompress as nncf``; NNCF 3.4's venv from ``_peer_venv.py``, which gets ``onnx`` and
   ``onnxruntime`` added on first use: ``import nncf``): ``nncf.quantize`` timed, peak memory,
   fidelity of the result (ONNX Runtime for ONNX results, the CPU plugin for IR results);
3. measures in this one process the OpenVINO latency of every result (the quantized ``.onnx`` read
   by OpenVINO, and the quantized IR) and of the FP32 IR, round-robin interleaved;
4. prints a table and writes JSON (``benchmarks/.cache/results/ptq_onnx_openvino.json``).

Fidelity is measured per item, not streamed: silero's held-out items carry the float model's own
state, so the figure is the one-step error (SQNR of the speech probability; "top-1 agreement" is
the agreement of the 0.5 speech decisions). See benchmarks/README.md for every number.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO / "examples"))

import ptq_torch  # noqa: E402  (its data preparation, latency, and table helpers)
from _peer_venv import CACHE_DIR, NNCF_VERSION, _pip, ensure_peer_venv  # noqa: E402
from ptq_torch import (  # noqa: E402
    LATENCY_CONFIG,
    LATENCY_NOISE,
    SQNR_NOISE_DB,
    _fmt,
    _get,
    combine_repeats,
    compare_row,
    measure_latency,
    print_table,
    runtime_precisions,
)

WORK_DIR = CACHE_DIR / "ptq_onnx_openvino"
DEFAULT_OUT = CACHE_DIR / "results" / "ptq_onnx_openvino.json"
TOOLS = ("ours", "nncf")
BACKENDS = ("onnx", "openvino")
MODELS = ("digits", "effnet", "silero")
SILERO_FILE = "silero_vad_16k_op15.onnx"
FP32_EXACT = {"INFERENCE_PRECISION_HINT": "f32"}


# ----------------------------------------------------------------------------------------------
# step 1: model files and data
# ----------------------------------------------------------------------------------------------


def _export_torch(model, example, onnx_path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )


def _onnx_outputs(onnx_path: Path, items: list[dict]):
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([np.asarray(session.run(None, it)[0]).reshape(1, -1) for it in items])


def _save_npz(path: Path, calib: list[dict], held_out: list[dict], ref, extra: dict | None = None) -> None:
    import numpy as np

    arrays = {f"calib:{k}": np.stack([it[k] for it in calib]) for k in calib[0]}
    arrays.update({f"eval:{k}": np.stack([it[k] for it in held_out]) for k in held_out[0]})
    arrays["eval_ref"] = ref
    arrays.update(extra or {})
    np.savez(path, **arrays)


def prepare_torch_model(name: str, args) -> tuple[Path, Path, Path, dict]:
    """``digits`` / ``effnet``: the ptq_torch data, exported to ONNX and IR; items of batch 1."""
    import openvino as ov
    import torch

    ptq_torch.WORK_DIR = WORK_DIR  # its helpers write their files here
    if name == "effnet":
        weights, data_path, info = ptq_torch.prepare_effnet(args.calib_images, args.eval_images, args.seed)
    else:
        weights, data_path, info = ptq_torch.prepare_digits(name, args.seed, args.digits_epochs)
    data = torch.load(data_path, map_location="cpu", weights_only=True)
    model = ptq_torch.fp32_model(name, weights)
    onnx_path, ir_path = WORK_DIR / f"{name}.onnx", WORK_DIR / f"{name}.xml"
    _export_torch(model, data["calib_x"][:1], onnx_path)
    ov.save_model(ov.convert_model(str(onnx_path)), str(ir_path), compress_to_fp16=False)
    calib = [
        {"x": data["calib_x"][i : i + 1].numpy()} for i in range(min(args.subset_size, len(data["calib_x"])))
    ]
    held_out = [{"x": data["eval_x"][i : i + 1].numpy()} for i in range(len(data["eval_x"]))]
    ref = _onnx_outputs(onnx_path, held_out)
    npz = WORK_DIR / f"{name}_data.npz"
    _save_npz(npz, calib, held_out, ref)
    info.update({"n_calib": len(calib), "n_eval": len(held_out), "onnx": onnx_path.name, "ir": ir_path.name})
    return onnx_path, ir_path, npz, info


def _silero_helpers():
    """The speech-like audio generator and streaming helper of the silero tests (one definition)."""
    path = REPO / "tests" / "onnx" / "test_onnx_real_models.py"
    spec = importlib.util.spec_from_file_location("nncompress_bench_silero", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_silero(args) -> tuple[Path, Path, Path, dict]:
    """silero-vad's ``silero_vad_16k_op15.onnx`` and its IR; items = streamed 512-sample chunks."""
    import onnx
    import openvino as ov

    helpers = _silero_helpers()
    onnx_path = helpers.DATA / SILERO_FILE
    model = onnx.load(str(onnx_path))
    names = [i.name for i in model.graph.input]
    runner = helpers.ort_runner(model)
    _, calib = helpers.stream(runner, names, helpers.speech_like(args.silero_seconds, seed=0))
    _, held_out = helpers.stream(runner, names, helpers.speech_like(args.silero_seconds * 0.7, seed=1))
    calib = calib[: args.subset_size]
    ir_path = WORK_DIR / "silero.xml"
    shapes = [("input", [1, 576]), ("state", [2, 1, 128]), ("sr", [])]
    ov.save_model(ov.convert_model(str(onnx_path), input=shapes), str(ir_path), compress_to_fp16=False)
    ref = _onnx_outputs(onnx_path, held_out)
    npz = WORK_DIR / "silero_data.npz"
    _save_npz(npz, calib, held_out, ref)
    return onnx_path, ir_path, npz, {"n_calib": len(calib), "n_eval": len(held_out), "onnx": SILERO_FILE}


def ensure_peer_onnx(python: Path) -> None:
    """NNCF 3.4's venv is made for torch PTQ: its ONNX backend also needs onnx and onnxruntime."""
    probe = subprocess.run([str(python), "-c", "import onnx, onnxruntime"], capture_output=True)
    if probe.returncode != 0:
        _pip(python, "onnx", "onnxruntime", quiet=True)


# ----------------------------------------------------------------------------------------------
# step 2: the workers
# ----------------------------------------------------------------------------------------------


def run_worker(tool: str, python: Path, name: str, backend: str, model_path: Path, npz: Path, args) -> dict:
    tag = f"{name}-{backend}-{tool}"
    out, log = WORK_DIR / f"{tag}.json", WORK_DIR / f"{tag}.log"
    model_out = WORK_DIR / f"{tag}-int8{'.onnx' if backend == 'onnx' else '.xml'}"
    for stale in (out, model_out):
        stale.unlink(missing_ok=True)
    cmd = [str(python), str(BENCH_DIR / "_ptq_onnx_ov_worker.py"), "--tool", tool, "--model", str(model_path)]
    cmd += ["--data", str(npz), "--out", str(out), "--model-out", str(model_out)]
    cmd += ["--subset-size", str(args.subset_size)]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("TQDM_DISABLE", "1")
    print(f"  [{name}/{backend}/{tool}] quantizing ... (log: {log.relative_to(REPO)})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=args.worker_timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    res = json.loads(out.read_text()) if out.exists() else {"tool": tool, "errors": {}}
    res.update(worker_rc=rc, worker_wall_s=time.perf_counter() - t0, log=str(log))
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        res.setdefault("errors", {})["worker"] = f"exit {rc}; log tail:\n" + "\n".join(tail)
        print(f"  [{name}/{backend}/{tool}] FAILED: {res['errors'].get('quantize', res['errors']['worker'])}")
    else:
        print(
            f"  [{name}/{backend}/{tool}] quantize {res['quantize_s']:.2f} s, peak +{res['quantize_peak_extra_mb']:.0f} MiB, "
            f"SQNR {_fmt(_get(res, 'fidelity', 'sqnr_db'))} dB, load average {res['loadavg_before'][0]:.1f}",
            flush=True,
        )
    return res


# ----------------------------------------------------------------------------------------------
# step 3: OpenVINO latency of every result, interleaved
# ----------------------------------------------------------------------------------------------


def latency_stage(name: str, ir_path: Path, npz: Path, workers: dict, args) -> dict:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    data = np.load(npz)
    keys = [k for k in data.files if k.startswith("eval:")]
    item = {k.split(":", 1)[1]: np.array(data[k][0]) for k in keys}  # 0-d inputs stay 0-d
    paths = {"fp32_f32": (ir_path, FP32_EXACT)}
    for (backend, tool), res in workers.items():
        if res.get("model_out") and Path(res["model_out"]).exists():
            paths[f"{backend}_{tool}"] = (Path(res["model_out"]), {})
    compiled, inputs, out = {}, {}, {"variants": {}, "errors": {}}
    # .onnx results are read with the item's static shapes (OpenVINO's ONNX frontend needs them for If branches)
    shapes = [(k, list(v.shape)) for k, v in item.items()]
    for variant, (path, extra) in paths.items():
        try:
            model = (
                ov.convert_model(str(path), input=shapes)
                if path.suffix == ".onnx"
                else core.read_model(str(path))
            )
            compiled[variant] = core.compile_model(model, "CPU", {**LATENCY_CONFIG, **extra})
            inputs[variant] = item
            out["variants"][variant] = runtime_precisions(compiled[variant])
        except Exception as exc:
            out["errors"][variant] = f"{type(exc).__name__}: {exc}"
    if compiled:
        print(f"  [{name}] OpenVINO latency, batch 1: {', '.join(compiled)}", flush=True)
        out["latency"] = measure_latency(compiled, inputs, args.rounds, args.block_s, args.warmup)
    return out


# ----------------------------------------------------------------------------------------------
# step 4: report
# ----------------------------------------------------------------------------------------------


def summarize(name: str, entry: dict) -> list[dict]:
    rows: list[dict] = []
    lat = _get(entry, "openvino", "latency", default={}) or {}
    var = _get(entry, "openvino", "variants", default={}) or {}
    for backend in BACKENDS:
        w = {tool: entry["workers"].get((backend, tool), {}) for tool in TOOLS}
        if not any(w.values()):
            continue
        label = f"{name}/{backend}"

        def both(*path, w=w):
            return _get(w["ours"], *path), _get(w["nncf"], *path)

        rows.append(compare_row(label, "quantize wall time, s", *both("quantize_s"), "ratio", "<= 0.5"))
        rows.append(compare_row(label, "quantize peak RSS increase, MiB", *both("quantize_peak_extra_mb"), "ratio", "<= 1"))  # fmt: skip
        rows.append(compare_row(label, "quantize CPU time, s", *both("quantize_cpu_s"), "ratio"))
        rows.append(compare_row(label, "import time, s", *both("import_s"), "ratio"))
        rows.append(compare_row(label, "quantizers (Q / FakeQuantize ops)", *both("quantizers")))
        rows.append(
            compare_row(
                label, "SQNR vs FP32, dB", *both("fidelity", "sqnr_db"), "diff", ">= 0", tol=SQNR_NOISE_DB
            )
        )
        rows.append(compare_row(label, "top-1 agreement with FP32", *both("fidelity", "top1_agreement"), "diff", ">= 0"))  # fmt: skip
        rows.append(
            compare_row(
                label,
                "OV compute layers run in INT8 (share)",
                _get(var, f"{backend}_ours", "int8_share"),
                _get(var, f"{backend}_nncf", "int8_share"),
                "diff",
                ">= 0",
            )
        )
        o, n = _get(lat, f"{backend}_ours", "median_ms"), _get(lat, f"{backend}_nncf", "median_ms")
        f32 = _get(lat, "fp32_f32", "median_ms")
        digests = [_get(var, f"{backend}_{tool}", "runtime_digest") for tool in TOOLS]
        same_graph = digests[0] is not None and digests[0] == digests[1]
        rows.append(
            compare_row(
                label,
                "OV runtime graph: layers (type:precision in order)",
                _get(var, f"{backend}_ours", "runtime_layers"),
                _get(var, f"{backend}_nncf", "runtime_layers"),
                compare=("same" if same_graph else "differs") if all(digests) else None,
            )
        )
        latency = compare_row(label, "OV INT8 latency b1, ms", o, n, "ratio", "<= 1.0", tol=LATENCY_NOISE)
        if same_graph and latency["status"] == "MISS":  # the same executed graph: the gap is noise
            latency["status"] = "~ noise, same graph"
        rows.append(latency)
        rows.append(
            compare_row(
                label,
                "OV INT8 / FP32(f32) latency b1",
                o / f32 if o and f32 else None,
                n / f32 if n and f32 else None,
            )  # fmt: skip
        )
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer crops, shorter latency blocks")
    p.add_argument("--only", choices=TOOLS, help="run one tool only")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--backends", default=",".join(BACKENDS), help="onnx,openvino")
    p.add_argument("--subset-size", type=int, default=300, help="nncf.quantize subset_size (default 300)")
    p.add_argument("--calib-images", type=int, help="EfficientNet calibration crops (default 300, quick 64)")
    p.add_argument("--eval-images", type=int, help="EfficientNet held-out crops (default 200, quick 48)")
    p.add_argument("--silero-seconds", type=float, help="seconds of calibration audio (default 10, quick 4)")
    p.add_argument("--digits-epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, help="latency rounds per variant (default 8, quick 3)")
    p.add_argument("--block-s", type=float, help="seconds per latency block (default 0.3, quick 0.1)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="quantize runs per tool, each a fresh process, tools alternating: min time",
    )
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--worker-timeout", type=int, default=1800)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for b in args.backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    args.calib_images = args.calib_images or (64 if args.quick else 300)
    args.eval_images = args.eval_images or (48 if args.quick else 200)
    args.silero_seconds = args.silero_seconds or (4.0 if args.quick else 10.0)
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.block_s = args.block_s or (0.1 if args.quick else 0.3)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    tools = [args.only] if args.only else list(TOOLS)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    pythons = {"ours": Path(sys.executable)} if "ours" in tools else {}
    if "nncf" in tools:
        pythons["nncf"] = ensure_peer_venv()
        ensure_peer_onnx(pythons["nncf"])

    import openvino as ov

    report: dict = {
        "benchmark": "ptq_onnx_openvino",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv[1:],
        "peer": f"nncf=={NNCF_VERSION}",
        "machine": {"cpus": os.cpu_count(), "openvino": ov.get_version(), "loadavg": list(os.getloadavg())},
        "models": {},
    }
    rows: list[dict] = []
    for name in args.models:
        print(f"[{name}] preparing model files and data", flush=True)
        onnx_path, ir_path, npz, info = (
            prepare_silero(args) if name == "silero" else prepare_torch_model(name, args)
        )
        entry: dict = {"prepare": info, "workers": {}}
        for i, backend in enumerate(args.backends):
            path = onnx_path if backend == "onnx" else ir_path
            runs: dict[str, list[dict]] = {tool: [] for tool in tools}
            for rep in range(args.repeats):
                order = tools if (i + rep) % 2 == 0 else tools[::-1]  # alternate who runs first
                for tool in order:
                    runs[tool].append(run_worker(tool, pythons[tool], name, backend, path, npz, args))
            for tool in tools:
                entry["workers"][(backend, tool)] = combine_repeats(runs[tool])
        if not args.no_latency:
            entry["openvino"] = latency_stage(name, ir_path, npz, entry["workers"], args)
        entry["rows"] = summarize(name, entry)
        rows += entry["rows"]
        entry["workers"] = {f"{b}/{t}": r for (b, t), r in entry["workers"].items()}
        report["models"][name] = entry
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print()
    print_table(rows)
    print(
        f"\nload average at start {report['machine']['loadavg']}, at end {report['machine']['loadavg_end']}"
    )
    print(f"results: {args.out}")
    failed = [
        f"{m}/{k}"
        for m, e in report["models"].items()
        for k, w in e["workers"].items()
        if w.get("worker_rc") != 0
    ]
    if failed:
        print(f"failed runs: {', '.join(failed)} (logs in {WORK_DIR.relative_to(REPO)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
