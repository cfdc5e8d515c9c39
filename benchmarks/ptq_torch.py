"""PyTorch post-training quantization, side by side: nncompress vs NNCF 3.4, same model, same
weights, same data and calibration subset, in one run.

    .venv/bin/python benchmarks/ptq_torch.py                 # both tools, digits + EfficientNet-Lite0
    .venv/bin/python benchmarks/ptq_torch.py --quick         # fewer images and latency iterations
    .venv/bin/python benchmarks/ptq_torch.py --only nncf     # the peer alone (or --only ours)
    .venv/bin/python benchmarks/ptq_torch.py --models digits

For each model this parent process
1. prepares the inputs once: trains ``DigitsCNN`` (deterministic, seconds) and saves its weights,
   or loads EfficientNet-Lite0's real ImageNet weights; builds the calibration items and the
   held-out inputs (digits train/test split; random crops of the sample photos for
   EfficientNet) and the FP32 reference logits, all saved to ``benchmarks/.cache/ptq_torch/``;
2. runs ``benchmarks/_ptq_worker.py`` in a fresh process per tool: with this venv for ``ours``
   (``import nncompress as nncf``) and with the peer venv for ``nncf`` (``import nncf``), the
   same worker code. Each worker times ``nncf.quantize``, measures its peak memory, measures the
   fake-quantized torch model's fidelity, and exports the INT8 OpenVINO IR;
3. measures in this one process, with OpenVINO: the FP32 model's IR (``convert_model`` of the
   FP32 torch model) compiled with ``INFERENCE_PRECISION_HINT=f32`` (the exact FP32 reference) and
   with the default (bf16 on CPUs that have it), and each tool's INT8 IR (default config); the
   share of compute layers that execute in INT8 (runtime model ``runtimePrecision``), the OV
   INT8 outputs' fidelity vs the torch FP32 reference, and sync latency at batch 1 and 32,
   interleaved round-robin between the variants so that machine noise hits them alike;
4. prints a table of the figures and ratios with the goals, and writes all figures to JSON
   (``--out``, default ``benchmarks/.cache/results/ptq_torch.json``).

See benchmarks/README.md for the meaning of every number.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO / "examples"))

from _peer_venv import CACHE_DIR, NNCF_VERSION, ensure_peer_venv  # noqa: E402

WORK_DIR = CACHE_DIR / "ptq_torch"
DEFAULT_OUT = CACHE_DIR / "results" / "ptq_torch.json"
TOOLS = ("ours", "nncf")
MODELS = ("digits", "digits_resnet", "effnet")
COMPUTE_LAYER_TYPES = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"}
INT8_PRECISIONS = {"i8", "u8"}
LATENCY_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
FP32_EXACT = {"INFERENCE_PRECISION_HINT": "f32"}
# a miss by less than this is shown as "~ noise", not "MISS"
LATENCY_NOISE = 0.05  # relative latency
SQNR_NOISE_DB = 0.1


# ----------------------------------------------------------------------------------------------
# step 1: inputs
# ----------------------------------------------------------------------------------------------


def prepare_digits(model_name: str, seed: int, epochs: int) -> tuple[Path, Path, dict]:
    """Train the digits model, save its weights and the data file; return their paths and info."""
    import torch
    from data import digits_tensors, train_digits_model
    from models import DigitsCNN, DigitsResNet

    cls = DigitsCNN if model_name == "digits" else DigitsResNet
    torch.manual_seed(seed)
    model = cls()
    t0 = time.perf_counter()
    train_digits_model(model, epochs=epochs, seed=seed)
    train_s = time.perf_counter() - t0
    weights = WORK_DIR / f"{model_name}_seed{seed}_ep{epochs}.pt"
    torch.save(model.state_dict(), weights)
    x_tr, y_tr, x_te, y_te = digits_tensors(seed)
    with torch.no_grad():
        ref = model.eval()(x_te)
    data = {"calib_x": x_tr, "calib_y": y_tr, "eval_x": x_te, "eval_y": y_te, "eval_ref": ref}
    data_path = WORK_DIR / f"{model_name}_data.pt"
    torch.save(data, data_path)
    acc = float((ref.argmax(1) == y_te).double().mean())
    info = {"train_s": train_s, "epochs": epochs, "seed": seed, "fp32_accuracy": acc}
    return weights, data_path, info


def prepare_effnet(n_calib: int, n_eval: int, seed: int) -> tuple[None, Path, dict]:
    import torch
    from data import imagenet_sample_crops
    from models import load_efficientnet_lite0

    model = load_efficientnet_lite0(pretrained=True)
    t0 = time.perf_counter()
    calib = imagenet_sample_crops(n_calib, seed=seed + 1)
    evalx = imagenet_sample_crops(n_eval, seed=seed + 2)
    crops_s = time.perf_counter() - t0
    with torch.no_grad():
        ref = torch.cat([model(evalx[i : i + 50]) for i in range(0, len(evalx), 50)])
    data_path = WORK_DIR / "effnet_data.pt"
    torch.save({"calib_x": calib, "eval_x": evalx, "eval_ref": ref}, data_path)
    return None, data_path, {"crops_s": crops_s, "n_calib": n_calib, "n_eval": n_eval}


def fp32_model(model_name: str, weights: Path | None):
    import torch
    from models import DigitsCNN, DigitsResNet, load_efficientnet_lite0

    if model_name == "effnet":
        return load_efficientnet_lite0(pretrained=True)
    model = (DigitsCNN if model_name == "digits" else DigitsResNet)()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


# ----------------------------------------------------------------------------------------------
# step 2: the workers
# ----------------------------------------------------------------------------------------------


def run_worker(
    tool: str, python: Path, model_name: str, weights, data_path: Path, args, rep: int = 0
) -> dict:
    suffix = f"-r{rep}" if rep else ""
    out = WORK_DIR / f"{model_name}-{tool}{suffix}.json"
    log = WORK_DIR / f"{model_name}-{tool}{suffix}.log"
    ir = WORK_DIR / f"{model_name}-{tool}-int8.xml"
    for stale in (out, ir, ir.with_suffix(".bin")):
        stale.unlink(missing_ok=True)
    cmd = [
        str(python),
        str(BENCH_DIR / "_ptq_worker.py"),
        "--tool",
        tool,
        "--model",
        model_name,
        "--data",
        str(data_path),
        "--out",
        str(out),
        "--ir-out",
        str(ir),
        "--subset-size",
        str(args.subset_size),
    ]
    if weights:
        cmd += ["--weights", str(weights)]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # each venv sees only its own packages
    env.setdefault("TQDM_DISABLE", "1")
    if args.threads:  # torch reads it at start-up; the worker records torch.get_num_threads()
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    print(f"  [{model_name}/{tool}] quantizing ... (log: {log.relative_to(REPO)})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=args.worker_timeout
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    result = (
        json.loads(out.read_text()) if out.exists() else {"tool": tool, "model": model_name, "errors": {}}
    )
    result["worker_rc"] = rc
    result["worker_wall_s"] = time.perf_counter() - t0
    result["log"] = str(log)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        result.setdefault("errors", {})["worker"] = f"exit {rc}; log tail:\n" + "\n".join(tail)
    if "quantize_s" in result:
        sqnr = _get(result, "torch_fidelity", "sqnr_db")
        load = result.get("loadavg_before", [0.0])[0]
        print(
            f"  [{model_name}/{tool}] quantize {result['quantize_s']:.2f} s (CPU {result['quantize_cpu_s']:.1f} s), "
            f"peak +{result['quantize_peak_extra_mb']:.0f} MiB, torch SQNR {_fmt(sqnr)} dB, "
            f"load average before {load:.1f}",
            flush=True,
        )
        if load > 0.5 * (os.cpu_count() or 1):
            print(
                f"  [{model_name}/{tool}] warning: the machine was busy; the timings are skewed", flush=True
            )
    for key, err in result.get("errors", {}).items():
        if not key.endswith("traceback"):
            print(f"  [{model_name}/{tool}] ERROR in {key}: {err}", flush=True)
    return result


def combine_repeats(runs: list[dict]) -> dict:
    """The first run's result, with the timings over all repeats: minimum wall and CPU time (the
    least disturbed run), median peak memory; every run's figures kept under ``repeats``."""
    result = dict(runs[0])
    ok = [r for r in runs if "quantize_s" in r]
    if len(runs) > 1 and ok:
        keys = ("quantize_s", "quantize_cpu_s", "quantize_peak_extra_mb", "import_s", "loadavg_before")
        result["repeats"] = [{k: r.get(k) for k in keys} for r in runs]
        result["quantize_s"] = min(r["quantize_s"] for r in ok)
        result["quantize_cpu_s"] = min(r["quantize_cpu_s"] for r in ok)
        result["import_s"] = min(r["import_s"] for r in ok)
        result["quantize_peak_extra_mb"] = statistics.median(r["quantize_peak_extra_mb"] for r in ok)
        bad = [r for r in runs if r.get("worker_rc") != 0]
        if bad:
            result["worker_rc"] = bad[0]["worker_rc"]
    return result


# ----------------------------------------------------------------------------------------------
# step 3: OpenVINO, in this process
# ----------------------------------------------------------------------------------------------


def runtime_precisions(compiled) -> dict:
    """Share of compute layers (conv, FC, matmul) the CPU plugin runs in i8/u8."""
    compute, int8, others = 0, 0, []
    types: dict[str, int] = {}
    sequence = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        key = f"{layer_type}:{precision}"
        types[key] = types.get(key, 0) + 1
        sequence.append(key)
        if layer_type in COMPUTE_LAYER_TYPES:
            compute += 1
            if precision in INT8_PRECISIONS:
                int8 += 1
            else:
                others.append(f"{op.get_friendly_name()} ({precision})")
    return {
        "compute_layers": compute,
        "int8_compute_layers": int8,
        "int8_share": int8 / compute if compute else 0.0,
        "non_int8_compute_layers": others[:20],
        "layer_precision_counts": dict(sorted(types.items())),
        # the executed graph, layer by layer: equal digests mean latency differences are noise
        "runtime_layers": len(sequence),
        "runtime_digest": hashlib.sha1("\n".join(sequence).encode()).hexdigest()[:12],
    }


def _ov_outputs(compiled, x, batch: int):
    import numpy as np
    import torch

    outs = []
    req = compiled.create_infer_request()
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch].numpy()
        n = len(chunk)
        if n < batch:  # pad the last chunk to the compiled batch
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        res = req.infer({0: chunk})
        outs.append(torch.from_numpy(np.array(res[compiled.output(0)][:n])))
    return torch.cat(outs)


def _fidelity(out, ref, labels=None) -> dict:
    from _ptq_worker import fidelity

    return fidelity(out, ref, labels)


def measure_latency(compiled: dict, inputs: dict, rounds: int, block_s: float, warmup: int) -> dict:
    """Sync latency (ms) per variant: warm-up, then ``rounds`` round-robin blocks of about
    ``block_s`` seconds per variant (rotated start), median and quartiles of single calls."""
    reqs = {name: c.create_infer_request() for name, c in compiled.items()}
    per_call = {}
    for name, req in reqs.items():
        for _ in range(warmup):
            req.infer(inputs[name], share_inputs=True)
        t0 = time.perf_counter()
        req.infer(inputs[name], share_inputs=True)
        per_call[name] = time.perf_counter() - t0
    iters = max(3, min(500, int(block_s / max(max(per_call.values()), 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in reqs}
    names = list(reqs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            req, inp, acc = reqs[name], inputs[name], times[name]
            for _ in range(iters):
                t0 = time.perf_counter()
                req.infer(inp, share_inputs=True)
                acc.append((time.perf_counter() - t0) * 1e3)
    res = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        res[name] = {"median_ms": statistics.median(ts), "p25_ms": q[0], "p75_ms": q[2], "n": len(ts)}
    return res


def openvino_stage(model_name: str, weights, data_path: Path, workers: dict, args) -> dict:
    import numpy as np
    import openvino as ov
    import torch

    data = torch.load(data_path, map_location="cpu", weights_only=True)
    eval_x, eval_ref, eval_y = data["eval_x"], data["eval_ref"], data.get("eval_y")
    example = data["calib_x"][:1]
    core = ov.Core()
    res: dict = {"openvino_version": ov.get_version(), "variants": {}, "errors": {}}

    models = {}
    t0 = time.perf_counter()
    models["fp32"] = ov.convert_model(fp32_model(model_name, weights), example_input=example)
    res["fp32_export_s"] = time.perf_counter() - t0
    for tool, wres in workers.items():
        ir = wres.get("ir_path")
        if ir and Path(ir).exists():
            models[f"int8_{tool}"] = core.read_model(ir)
    # (variant name, model key, extra config)
    variants = [("fp32_f32", "fp32", FP32_EXACT), ("fp32_default", "fp32", {})]
    variants += [(key, key, {}) for key in models if key.startswith("int8_")]

    latency: dict = {}
    for batch in args.batches:
        compiled, inputs = {}, {}
        shape = [batch, *example.shape[1:]]
        for name, key, extra in variants:
            try:
                m = models[key].clone()
                m.reshape(shape)
                t0 = time.perf_counter()
                compiled[name] = core.compile_model(m, "CPU", {**LATENCY_CONFIG, **extra})
                info = res["variants"].setdefault(name, {})
                info[f"compile_b{batch}_s"] = time.perf_counter() - t0
                if batch == max(args.batches):
                    info.update(runtime_precisions(compiled[name]))
                    info["fidelity"] = _fidelity(_ov_outputs(compiled[name], eval_x, batch), eval_ref, eval_y)
                rng = np.random.default_rng(0)
                src = eval_x[rng.integers(0, len(eval_x), batch)].numpy()
                inputs[name] = {0: np.ascontiguousarray(src)}
            except Exception as exc:
                res["errors"][f"{name}_b{batch}"] = f"{type(exc).__name__}: {exc}"
                compiled.pop(name, None)
        if compiled:
            print(f"  [{model_name}] OpenVINO latency, batch {batch}: {', '.join(compiled)}", flush=True)
            latency[f"b{batch}"] = measure_latency(compiled, inputs, args.rounds, args.block_s, args.warmup)
    res["latency"] = latency
    return res


# ----------------------------------------------------------------------------------------------
# step 4: report
# ----------------------------------------------------------------------------------------------


def _get(d: dict, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def compare_row(model_name, metric, ours, nncf, kind=None, goal="", digits=3, tol=0.0, compare=None) -> dict:
    """One table row: both values, their ratio or difference (or ``compare``), the goal, the status.

    ``goal`` reads "<= 0.5" or ">= 0"; a miss within ``tol`` of the goal shows as "~ noise".
    """
    cmp_val, status = None, ""
    if compare is not None:
        cmp_val = compare
    elif ours is not None and nncf is not None:
        if kind == "ratio" and nncf:
            cmp_val = ours / nncf
        elif kind == "diff":
            cmp_val = ours - nncf
    if cmp_val is not None and goal:
        op, target = goal.split()
        target = float(target)
        ok = cmp_val <= target + 1e-12 if op == "<=" else cmp_val >= target - 1e-12
        near = cmp_val <= target + tol if op == "<=" else cmp_val >= target - tol
        status = "ok" if ok else ("~ noise" if near else "MISS")
    return {
        "model": model_name,
        "metric": metric,
        "ours": ours,
        "nncf": nncf,
        "compare": (f"{kind} " if kind else "") + _fmt(cmp_val, 3) if cmp_val is not None else "",
        "compare_value": cmp_val,
        "goal": goal,
        "status": status,
        "digits": digits,
    }


def summarize(model_name: str, entry: dict) -> list[dict]:
    """Rows: metric, ours, nncf, comparison, goal, status."""
    w, ov_res = entry["workers"], entry.get("openvino", {})
    rows: list[dict] = []

    def row(*args, **kwargs):
        rows.append(compare_row(model_name, *args, **kwargs))

    def both(*path):
        return _get(w, "ours", *path), _get(w, "nncf", *path)

    row("quantize wall time, s", *both("quantize_s"), "ratio", "<= 0.5")
    row("quantize peak RSS increase, MiB", *both("quantize_peak_extra_mb"), "ratio", "<= 1")
    row("quantize CPU time, s", *both("quantize_cpu_s"), "ratio")
    row("import time, s", *both("import_s"), "ratio")
    row(
        "torch fake-quant SQNR vs FP32, dB",
        *both("torch_fidelity", "sqnr_db"),
        "diff",
        ">= 0",
        tol=SQNR_NOISE_DB,
    )
    row("torch fake-quant top-1 agreement", *both("torch_fidelity", "top1_agreement"), "diff", ">= 0")
    if _get(w, "ours", "torch_fidelity", "accuracy") is not None or _get(
        w, "nncf", "torch_fidelity", "accuracy"
    ):
        row("torch fake-quant accuracy", *both("torch_fidelity", "accuracy"), "diff", ">= 0")
    row("IR FakeQuantize ops", *both("ir_fake_quantize_count"))
    v = ov_res.get("variants", {})
    row(
        "OV INT8 SQNR vs torch FP32, dB",
        _get(v, "int8_ours", "fidelity", "sqnr_db"),
        _get(v, "int8_nncf", "fidelity", "sqnr_db"),
        "diff",
        ">= 0",
        tol=SQNR_NOISE_DB,
    )
    row(
        "OV INT8 top-1 agreement",
        _get(v, "int8_ours", "fidelity", "top1_agreement"),
        _get(v, "int8_nncf", "fidelity", "top1_agreement"),
        "diff",
        ">= 0",
    )
    if _get(v, "fp32_f32", "fidelity", "accuracy") is not None:
        row(
            "OV INT8 accuracy",
            _get(v, "int8_ours", "fidelity", "accuracy"),
            _get(v, "int8_nncf", "fidelity", "accuracy"),
            "diff",
            ">= 0",
        )
    row(
        "OV compute layers run in INT8 (share)",
        _get(v, "int8_ours", "int8_share"),
        _get(v, "int8_nncf", "int8_share"),
        "diff",
        ">= 0",
    )
    for b, lat in ov_res.get("latency", {}).items():
        o, n = _get(lat, "int8_ours", "median_ms"), _get(lat, "int8_nncf", "median_ms")
        f32, fdef = _get(lat, "fp32_f32", "median_ms"), _get(lat, "fp32_default", "median_ms")
        row(f"OV INT8 latency {b}, ms", o, n, "ratio", "<= 1.0", tol=LATENCY_NOISE)
        row(
            f"OV INT8 / FP32(f32) latency {b}",
            o / f32 if o and f32 else None,
            n / f32 if n and f32 else None,
        )
        row(
            f"OV INT8 / FP32(default) latency {b}",
            o / fdef if o and fdef else None,
            n / fdef if n and fdef else None,
        )
        rows.append(
            {
                "model": model_name,
                "metric": f"OV FP32 latency {b}, ms (shared)",
                "ours": None,
                "nncf": None,
                "compare": f"f32 {_fmt(f32)} | default {_fmt(fdef)}",
                "compare_value": None,
                "goal": "",
                "status": "",
                "digits": 3,
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    headers = ["model", "metric", "ours", "nncf", "ours vs nncf", "goal", ""]
    table = [
        [
            r["model"],
            r["metric"],
            _fmt(r["ours"], r["digits"]),
            _fmt(r["nncf"], r["digits"]),
            r["compare"],
            r["goal"],
            r["status"],
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    line = "  ".join("{:<" + str(wd) + "}" for wd in widths)
    print(line.format(*headers))
    print(line.format(*["-" * wd for wd in widths]))
    prev = None
    for r in table:
        if prev is not None and r[0] != prev:
            print()
        prev = r[0]
        print(line.format(*r))


# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer images, fewer latency iterations")
    p.add_argument("--only", choices=TOOLS, help="run one tool only")
    p.add_argument("--models", default="digits,effnet", help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--subset-size", type=int, default=300, help="nncf.quantize subset_size (default 300)")
    p.add_argument("--calib-images", type=int, help="EfficientNet calibration crops (default 300, quick 64)")
    p.add_argument("--eval-images", type=int, help="EfficientNet held-out crops (default 200, quick 48)")
    p.add_argument("--repeats", type=int, default=1, help="quantize runs per tool (alternating): min time")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the workers (default: torch's choice)")
    p.add_argument("--digits-epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", default="1,32", help="OpenVINO latency batch sizes")
    p.add_argument("--rounds", type=int, help="latency rounds per variant (default 8, quick 3)")
    p.add_argument("--block-s", type=float, help="seconds per latency block (default 0.3, quick 0.1)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls per latency variant")
    p.add_argument("--no-latency", action="store_true", help="skip the OpenVINO stage")
    p.add_argument("--worker-timeout", type=int, default=1800)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.calib_images = args.calib_images or (64 if args.quick else 300)
    args.eval_images = args.eval_images or (48 if args.quick else 200)
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.block_s = args.block_s or (0.1 if args.quick else 0.3)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    tools = [args.only] if args.only else list(TOOLS)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    pythons = {}
    if "ours" in tools:
        pythons["ours"] = Path(sys.executable)
    if "nncf" in tools:
        pythons["nncf"] = ensure_peer_venv()

    import openvino as ov
    import torch

    report: dict = {
        "benchmark": "ptq_torch",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "peer": f"nncf=={NNCF_VERSION}",
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "openvino": ov.get_version()},
        "models": {},
    }
    all_rows: list[dict] = []
    for model_name in args.models:
        print(f"[{model_name}] preparing inputs", flush=True)
        if model_name == "effnet":
            weights, data_path, info = prepare_effnet(args.calib_images, args.eval_images, args.seed)
        else:
            weights, data_path, info = prepare_digits(model_name, args.seed, args.digits_epochs)
        entry: dict = {"prepare": info, "workers": {}}
        runs: dict[str, list[dict]] = {tool: [] for tool in tools}
        for rep in range(args.repeats):  # tools alternate, so that slow phases of the machine hit both
            for tool in tools:
                runs[tool].append(run_worker(tool, pythons[tool], model_name, weights, data_path, args, rep))
        for tool in tools:
            entry["workers"][tool] = combine_repeats(runs[tool])
        if not args.no_latency:
            entry["openvino"] = openvino_stage(model_name, weights, data_path, entry["workers"], args)
            for key, err in entry["openvino"]["errors"].items():
                print(f"  [{model_name}] OpenVINO ERROR {key}: {err}", flush=True)
        entry["rows"] = summarize(model_name, entry)
        all_rows += entry["rows"]
        report["models"][model_name] = entry

    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print()
    print_table(all_rows)
    print(f"\nresults: {args.out}")
    failed = [
        f"{m}/{t}"
        for m, e in report["models"].items()
        for t, w in e["workers"].items()
        if w.get("worker_rc") != 0 or "quantize_s" not in w
    ]
    if failed:
        print(f"failed runs: {', '.join(failed)} (see the logs in {WORK_DIR.relative_to(REPO)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
