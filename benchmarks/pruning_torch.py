"""Filter pruning that really removes channels, side by side: nncompress vs NNCF 2.19, same model,
pretrained weights, data, optimizer, batch order, epochs and pruning schedule, in one run.

    .venv/bin/python benchmarks/pruning_torch.py                   # both tools, both variants
    .venv/bin/python benchmarks/pruning_torch.py --quick           # fewer epochs, shorter latency
    .venv/bin/python benchmarks/pruning_torch.py --only ours       # (or --only nncf)
    .venv/bin/python benchmarks/pruning_torch.py --variants digits8 --repeats 3

Variants (``--variants``): ``digits8``: ``DigitsResNet`` (width 16) on the 8x8 digits;
``wide32``: ``DigitsResNet(width=32)`` on the digits upsampled (bilinear) to 32x32, where the
convolutions cost enough for OpenVINO latency to reflect FLOPs (at 8x8 the per-call overhead
dominates); ``resnet18``: the ResNet-18 layout (4 stages of 2 basic blocks, widths 32-64-128-256,
about 2.8 M parameters and 0.14 GMACs) on the same 32x32 digits: a realistic-size CNN for the
latency goal (pruned / dense OpenVINO latency <= 0.65 at level 0.5).

For each variant this parent process
1. trains the FP32 model (seeded) and saves its weights, the data tensors and the config both
   tools get: ``{"algorithm": "filter_pruning", "pruning_init": 0.1, "params": {"pruning_target":
   0.5, "schedule": "exponential", "pruning_steps": S, "prune_first_conv": false,
   "prune_downsample_convs": true}, "initializer": {"batchnorm_adaptation":
   {"num_bn_adaptation_samples": 256}}}``;
2. runs ``_pruning_worker.py`` per tool in its own process (same code, ``import nncompress as nncf``
   vs ``import nncf``): ``create_compressed_model``, fine-tuning with the schedule (E epochs, the
   target reached after S), ``ctrl.export_model("x.onnx")`` then ``openvino.convert_model``;
3. exports the dense FP32 model the same way (``torch.onnx.export``, TorchScript exporter, then
   ``openvino.convert_model``), reads every IR, counts parameters (float constants) and FLOPs
   (multiply-accumulates of Convolution / MatMul at batch 1, from the IR's shapes), the IR file
   size, OpenVINO test accuracy, and measures latency of all IRs in this one process, round-robin
   (``PERFORMANCE_HINT=LATENCY``; with ``INFERENCE_PRECISION_HINT=f32`` and with the default
   config, which runs bf16 on this CPU), batch 1 and 32, median after warm-up;
4. prints one table and writes the JSON (``--out``).

"Implied by the target": filter pruning at level p removes p of the filters (output channels) of
each prunable layer; a layer whose outputs are pruned keeps (1-p) of its FLOPs, and one whose
inputs also come from a pruned layer keeps (1-p)^2. The implied FLOPs ratio is
sum_l F_l (1-p)^k_l / sum_l F_l over the dense layers, k_l in {0, 1, 2} the number of pruned sides
of layer l (read from which channel counts differ between the dense and our pruned IR, cross-checked
with the groups each tool reports). The "prunable share" is the share of dense FLOPs in layers with
k_l >= 1; their FLOPs should land in [(1-p)^2, (1-p)] = [0.25, 0.5] of the dense ones.
"""

from __future__ import annotations

import argparse
import json
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

from _peer_venv import CACHE_DIR, NNCF2_VERSION, ensure_nncf2_venv, nncf2_env  # noqa: E402
from ptq_torch import FP32_EXACT, LATENCY_CONFIG, _fmt, _get, measure_latency  # noqa: E402

WORK_DIR = CACHE_DIR / "pruning_torch"
DEFAULT_OUT = CACHE_DIR / "results" / "pruning_torch.json"
TOOLS = ("ours", "nncf")
# name -> (architecture, base width, input size)
VARIANTS = {
    "digits8": ("digits_resnet", 16, 8),
    "wide32": ("digits_resnet", 32, 32),
    "resnet18": ("resnet18", 32, 32),
}
COMPUTE = {"Convolution", "GroupConvolution", "MatMul"}
LATENCY_GOAL = 0.65
TIME_NOISE = 0.05


# ----------------------------------------------------------------------------------------------
# step 1: inputs
# ----------------------------------------------------------------------------------------------


def _resize(x, size: int):
    import torch.nn.functional as F

    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).contiguous()


def prepare(variant: str, args) -> tuple[Path, Path, Path, dict]:
    import torch
    from _pruning_worker import make_model
    from data import digits_tensors
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    arch, width, size = VARIANTS[variant]
    x_tr, y_tr, x_te, y_te = digits_tensors(args.seed)
    x_tr, x_te = _resize(x_tr, size), _resize(x_te, size)
    data_path = WORK_DIR / f"{variant}_data.pt"
    torch.save({"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, data_path)
    weights = WORK_DIR / f"{variant}_fp32_seed{args.seed}_ep{args.pretrain_epochs}.pt"
    info: dict = {
        "arch": arch,
        "width": width,
        "input_size": size,
        "seed": args.seed,
        "pretrain_epochs": args.pretrain_epochs,
    }
    torch.manual_seed(args.seed)
    model = make_model(arch, width)
    if weights.exists() and not args.retrain:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        info["pretrain_s"] = "cached"
    else:  # the digits recipe of examples/data.py, on the variant's input size
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(args.seed)
        loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=64, shuffle=True, generator=gen)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.pretrain_epochs * len(loader))
        model.train()
        for _ in range(args.pretrain_epochs):
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
                sched.step()
        torch.save(model.state_dict(), weights)
        info["pretrain_s"] = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        info["fp32_accuracy"] = float((model(x_te).argmax(1) == y_te).double().mean())
    config = {
        "input_info": {"sample_size": [1, *x_tr.shape[1:]]},
        "compression": {
            "algorithm": "filter_pruning",
            "pruning_init": 0.1,
            "params": {
                "pruning_target": args.target,
                "schedule": "exponential",
                "pruning_steps": args.pruning_steps,
                "prune_first_conv": False,
                "prune_downsample_convs": True,
            },
            "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
        },
    }
    config_path = WORK_DIR / f"{variant}_config.json"
    config_path.write_text(json.dumps(config, indent=1))
    info["config"] = config
    return weights, data_path, config_path, info


# ----------------------------------------------------------------------------------------------
# step 2: the workers
# ----------------------------------------------------------------------------------------------


def run_worker(tool: str, python: Path, variant: str, paths: tuple, args, rep: int = 0) -> dict:
    weights, data_path, config_path = paths
    stem = WORK_DIR / f"{variant}-{tool}{f'-r{rep}' if rep else ''}"
    out, log = stem.with_suffix(".json"), stem.with_suffix(".log")
    onnx, ir = Path(f"{stem}.onnx"), Path(f"{stem}.xml")
    for stale in (out, onnx, ir, ir.with_suffix(".bin")):
        stale.unlink(missing_ok=True)
    cmd = [str(python), str(BENCH_DIR / "_pruning_worker.py"), "--tool", tool]
    arch, width, _ = VARIANTS[variant]
    cmd += ["--arch", arch, "--width", str(width), "--weights", str(weights), "--data", str(data_path)]
    cmd += ["--config", str(config_path), "--out", str(out), "--onnx-out", str(onnx), "--ir-out", str(ir)]
    cmd += ["--epochs", str(args.epochs), "--lr", str(args.lr), "--seed", str(args.seed)]
    env = nncf2_env() if tool == "nncf" else dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("TQDM_DISABLE", "1")
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    print(f"  [{variant}/{tool}] prune + fine-tune ... (log: {log.relative_to(REPO)})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(
                cmd, cwd=WORK_DIR, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=args.worker_timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    result = json.loads(out.read_text()) if out.exists() else {"tool": tool, "errors": {}}
    result["worker_rc"], result["worker_wall_s"], result["log"] = rc, time.perf_counter() - t0, str(log)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        result.setdefault("errors", {})["worker"] = f"exit {rc}; log tail:\n" + "\n".join(tail)
    print(
        f"  [{variant}/{tool}] accuracy after init {_fmt(_get(result, 'init_eval', 'accuracy'), 4)}, "
        f"after fine-tuning {_fmt(_get(result, 'final_eval', 'accuracy'), 4)} (level "
        f"{_fmt(result.get('final_level'))}), {result['worker_wall_s']:.1f} s",
        flush=True,
    )
    for key, err in result.get("errors", {}).items():
        if not key.endswith("traceback"):
            print(f"  [{variant}/{tool}] ERROR in {key}: {err}", flush=True)
    return result


# ----------------------------------------------------------------------------------------------
# step 3: OpenVINO, in this process
# ----------------------------------------------------------------------------------------------


def export_dense(variant: str, weights: Path, example) -> Path:
    import openvino as ov
    import torch
    from _pruning_worker import make_model

    arch, width, _ = VARIANTS[variant]
    model = make_model(arch, width)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    onnx = WORK_DIR / f"{variant}-dense.onnx"
    ir = WORK_DIR / f"{variant}-dense.xml"
    torch.onnx.export(model.eval(), (example,), str(onnx), dynamo=False)
    ov.save_model(ov.convert_model(str(onnx)), str(ir), compress_to_fp16=False)
    return ir


def ir_cost(model, input_shape) -> dict:
    """Float parameters, multiply-accumulates per compute layer (batch 1) of an IR."""
    import numpy as np

    m = model.clone()
    m.reshape(list(input_shape))
    layers, params = {}, 0
    for op in m.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Constant" and op.get_element_type().is_real():
            params += int(np.prod(op.get_output_shape(0))) if len(op.get_output_shape(0)) else 1
        if kind not in COMPUTE:
            continue
        w = list(op.input(1).get_partial_shape().to_shape())
        out = list(op.output(0).get_partial_shape().to_shape())
        if kind == "Convolution":  # w: [Cout, Cin, k...]
            macs, cin, cout = int(np.prod(out[1:]) * np.prod(w[1:])), w[1], w[0]
        elif kind == "GroupConvolution":  # w: [G, Cout/G, Cin/G, k...]
            macs, cin, cout = int(np.prod(out[1:]) * np.prod(w[2:])), w[0] * w[2], w[0] * w[1]
        else:  # MatMul: K = weight elements / output features
            k = int(np.prod(w)) // out[-1]
            macs, cin, cout = int(np.prod(out[1:]) * k), k, out[-1]
        layers[op.get_friendly_name()] = {"macs": macs, "cin": int(cin), "cout": int(cout)}
    return {"params": params, "macs": sum(v["macs"] for v in layers.values()), "layers": layers}


def implied(dense: dict, pruned: dict, level: float) -> dict:
    """FLOPs ratio the level implies, from which sides (in/out) of each layer ``pruned`` changed."""
    total = kept = prunable = prunable_now = 0
    for name, d in dense["layers"].items():
        p = pruned["layers"].get(name)
        if p is None:
            continue
        k = int(p["cout"] < d["cout"]) + int(p["cin"] < d["cin"])
        total += d["macs"]
        kept += d["macs"] * (1 - level) ** k
        if k:
            prunable += d["macs"]
            prunable_now += p["macs"]
    return {
        "implied_macs_ratio": kept / total if total else None,
        "prunable_share": prunable / total if total else None,
        "prunable_layers_macs_ratio": prunable_now / prunable if prunable else None,
    }


def openvino_stage(variant: str, data_path: Path, irs: dict, args) -> dict:
    import numpy as np
    import openvino as ov
    import torch

    data = torch.load(data_path, map_location="cpu", weights_only=True)
    x_te, y_te = data["x_test"], data["y_test"]
    core = ov.Core()
    res: dict = {"openvino_version": ov.get_version(), "models": {}, "errors": {}, "latency": {}}
    models = {}
    for name, ir in irs.items():
        try:
            models[name] = core.read_model(str(ir))
            size = Path(ir).stat().st_size + Path(ir).with_suffix(".bin").stat().st_size
            res["models"][name] = {"ir_bytes": size, **ir_cost(models[name], [1, *x_te.shape[1:]])}
        except Exception as exc:
            res["errors"][name] = f"{type(exc).__name__}: {exc}"
    if "dense" in res["models"] and "ours" in res["models"]:
        res["implied"] = implied(res["models"]["dense"], res["models"]["ours"], args.target)
    for batch in args.batches:
        compiled, inputs = {}, {}
        for name, model in models.items():
            for suffix, extra in (("f32", FP32_EXACT), ("default", {})):
                key = f"{name}_{suffix}"
                try:
                    m = model.clone()
                    m.reshape([batch, *x_te.shape[1:]])
                    compiled[key] = core.compile_model(m, "CPU", {**LATENCY_CONFIG, **extra})
                    inputs[key] = {0: np.ascontiguousarray(x_te[:batch].numpy())}
                    if batch == max(args.batches):  # accuracy of the IR on the test set
                        req, preds = compiled[key].create_infer_request(), []
                        for i in range(0, len(x_te), batch):
                            chunk = x_te[i : i + batch].numpy()
                            n = len(chunk)
                            if n < batch:
                                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
                            preds.append(
                                np.array(req.infer({0: chunk})[compiled[key].output(0)][:n]).argmax(1)
                            )
                        acc = float((np.concatenate(preds) == y_te.numpy()).mean())
                        res["models"][name][f"ov_accuracy_{suffix}"] = acc
                except Exception as exc:
                    res["errors"][f"{key}_b{batch}"] = f"{type(exc).__name__}: {exc}"
        print(f"  [{variant}] OpenVINO latency, batch {batch}: {', '.join(compiled)}", flush=True)
        runs = [
            measure_latency(compiled, inputs, args.rounds, args.block_s, args.warmup)
            for _ in range(args.repeats)
        ]
        lat = {}
        for key in runs[0]:  # with --repeats: the median of the runs' medians, every run kept
            lat[key] = dict(runs[0][key])
            lat[key]["median_ms"] = statistics.median(r[key]["median_ms"] for r in runs)
            lat[key]["runs_median_ms"] = [r[key]["median_ms"] for r in runs]
        res["latency"][f"b{batch}"] = lat
    return res


# ----------------------------------------------------------------------------------------------
# step 4: report
# ----------------------------------------------------------------------------------------------


def summarize(variant: str, entry: dict, args) -> list[list[str]]:
    w, ov_res = entry["workers"], entry.get("openvino", {})
    m = ov_res.get("models", {})
    rows: list[list[str]] = []

    def row(metric, ours, nncf, cmp="", goal="", status="", digits=3):
        rows.append([variant, metric, _fmt(ours, digits), _fmt(nncf, digits), cmp, goal, status])

    def status(value, op, target, tol=0.0):
        if value is None:
            return ""
        ok = value <= target + 1e-12 if op == "<=" else value >= target - 1e-12
        near = value <= target + tol if op == "<=" else value >= target - tol
        return "ok" if ok else ("~ noise" if near else "MISS")

    fp32 = entry["prepare"]["fp32_accuracy"]
    row("dense FP32 accuracy (shared)", fp32, fp32, digits=4)
    a_o, a_n = _get(w, "ours", "init_eval", "accuracy"), _get(w, "nncf", "init_eval", "accuracy")
    row("accuracy after create (level 0.1)", a_o, a_n, digits=4)

    def filters(tool):
        f = _get(w, tool, "init_filters")
        return f"{f['removed']}/{f['total']}" if f else None

    # NNCF 2.19 rounds each group's kept filters up to a multiple of 8: at 0.1 it removes none
    rows.append(
        [
            variant,
            "  conv filters removed at create (level 0.1)",
            filters("ours") or "-",
            filters("nncf") or "-",
            "",
            "",
            "",
        ]
    )
    a_o, a_n = _get(w, "ours", "final_eval", "accuracy"), _get(w, "nncf", "final_eval", "accuracy")
    diff = a_o - a_n if a_o is not None and a_n is not None else None
    n_test = _get(w, "ours", "final_eval", "errors")
    row(
        "accuracy after pruning + fine-tuning",
        a_o,
        a_n,
        f"diff {_fmt(diff)}" if diff is not None else "",
        ">= 0",
        status(diff, ">=", 0.0, 1.01 / 450 if n_test is not None else 0.0),
        digits=4,
    )
    row("final pruning level", _get(w, "ours", "final_level"), _get(w, "nncf", "final_level"))
    row("OV IR accuracy (f32)", *(_get(m, t, "ov_accuracy_f32") for t in TOOLS), digits=4)
    dense = m.get("dense", {})
    for key, label in (("params", "exported params"), ("macs", "exported MACs (batch 1)")):
        d = dense.get(key)
        o, n = _get(m, "ours", key), _get(m, "nncf", key)
        row(f"{label}, dense {_fmt(d)}", o, n)
        r_o = o / d if o is not None and d else None
        r_n = n / d if n is not None and d else None
        goal = ""
        st = ""
        if key == "macs":
            imp = _get(ov_res, "implied", "implied_macs_ratio")
            goal = f"<= implied {_fmt(imp)}" if imp is not None else ""
            st = status(r_o, "<=", imp, 0.01) if imp is not None else ""
        row(f"  {label} / dense", r_o, r_n, goal=goal, status=st)
    imp = ov_res.get("implied", {})
    row("  prunable share of dense MACs (layers with a pruned side)", imp.get("prunable_share"), None)
    pr = imp.get("prunable_layers_macs_ratio")
    row("  prunable layers' MACs / dense", pr, None, goal="in [0.25, 0.5]", status=status(pr, "<=", 0.5))
    d_bytes = dense.get("ir_bytes")
    o, n = _get(m, "ours", "ir_bytes"), _get(m, "nncf", "ir_bytes")
    row(f"IR size (xml+bin), bytes; dense {_fmt(d_bytes)}", o, n)
    row("  IR size / dense", o / d_bytes if o and d_bytes else None, n / d_bytes if n and d_bytes else None)
    lat = ov_res.get("latency", {})
    for b in args.batches:
        for suffix in ("f32", "default"):
            dl = _get(lat, f"b{b}", f"dense_{suffix}", "median_ms")
            lo = _get(lat, f"b{b}", f"ours_{suffix}", "median_ms")
            ln = _get(lat, f"b{b}", f"nncf_{suffix}", "median_ms")
            row(f"OV latency b{b} {suffix}, ms; dense {_fmt(dl)}", lo, ln, digits=4)
            r_o = lo / dl if lo and dl else None
            r_n = ln / dl if ln and dl else None
            row(
                f"  pruned / dense latency b{b} {suffix}",
                r_o,
                r_n,
                goal=f"ours <= {LATENCY_GOAL}",
                status=status(r_o, "<=", LATENCY_GOAL, TIME_NOISE * LATENCY_GOAL),
            )
    return rows


def print_table(rows: list[list[str]], headers: list[str] | None = None) -> None:
    """Rows as a `|`-separated table (``benchmarks/pruning_keras.py`` passes its own headers)."""
    headers = headers or ["variant", "metric", "ours", "nncf", "ours vs nncf", "goal", ""]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = " | ".join(h.ljust(wd) for h, wd in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print(" | ".join(str(c).ljust(wd) for c, wd in zip(r, widths)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer epochs and latency rounds")
    parser.add_argument("--only", choices=TOOLS)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="alternate the tools N times (accuracy: the 1st run) and repeat the latency measurement N times",
    )
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--pruning-steps", type=int)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--retrain", action="store_true", help="retrain the FP32 weights even if cached")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the workers (0: default)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--block-s", type=float)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--worker-timeout", type=float, default=1200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (4 if args.quick else 10)
    args.pruning_steps = args.pruning_steps or (2 if args.quick else 3)
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.block_s = args.block_s or (0.1 if args.quick else 0.3)
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tools = [args.only] if args.only else list(TOOLS)
    pythons = {"ours": Path(sys.executable)}
    if "nncf" in tools:
        pythons["nncf"] = ensure_nncf2_venv()
    report: dict = {"nncf_version": NNCF2_VERSION, "args": {k: str(v) for k, v in vars(args).items()}}
    all_rows: list[list[str]] = []
    failed = False
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        print(f"[{variant}] preparing (FP32 training) ...", flush=True)
        weights, data_path, config_path, info = prepare(variant, args)
        print(f"[{variant}] FP32 accuracy {info['fp32_accuracy']:.4f}", flush=True)
        runs: dict[str, list] = {t: [] for t in tools}
        for rep in range(args.repeats):
            for tool in tools if rep % 2 == 0 else tools[::-1]:
                runs[tool].append(
                    run_worker(tool, pythons[tool], variant, (weights, data_path, config_path), args, rep)
                )
        workers = {t: r[0] for t, r in runs.items()}
        for t, r in runs.items():
            if len(r) > 1:
                workers[t]["repeat_accuracies"] = [_get(x, "final_eval", "accuracy") for x in r]
            failed |= any(x.get("worker_rc") != 0 for x in r)
        import torch

        example = torch.load(data_path, weights_only=True)["x_test"][:1]
        irs = {"dense": export_dense(variant, weights, example)}
        for t, wres in workers.items():
            if wres.get("ir_path") and Path(wres["ir_path"]).exists():
                irs[t] = wres["ir_path"]
        entry = {"prepare": info, "workers": workers}
        entry["openvino"] = openvino_stage(variant, data_path, irs, args)
        report[variant] = entry
        all_rows += summarize(variant, entry, args)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    load = os.getloadavg()
    print()
    print_table(all_rows)
    print(f"\n1-min load average at the end: {load[0]:.2f} (cores: {os.cpu_count()}); JSON: {args.out}")
    if load[0] > (os.cpu_count() or 1) / 2:
        print("warning: the machine was busy; latency figures are noisy (use --repeats or rerun)")
    lat_iqr = [
        (v, k, s)
        for v in report
        if isinstance(report[v], dict) and "openvino" in report[v]
        for b in report[v]["openvino"]["latency"].values()
        for k, s in b.items()
        if s["p75_ms"] > 1.3 * s["p25_ms"]
    ]
    for v, k, s in lat_iqr:
        print(f"warning: [{v}] {k} latency quartiles {s['p25_ms']:.3f}..{s['p75_ms']:.3f} ms: noisy")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
