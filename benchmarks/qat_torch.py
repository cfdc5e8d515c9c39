"""Training-time compression (quantization-aware training), side by side: nncompress vs NNCF 2.19,
same model, same pretrained weights, same data, optimizer, batch order and epochs, in one run.

    .venv/bin/python benchmarks/qat_torch.py                  # both tools, DigitsCNN + DigitsResNet
    .venv/bin/python benchmarks/qat_torch.py --quick          # 1 epoch, fewer timed steps
    .venv/bin/python benchmarks/qat_torch.py --only nncf      # the peer alone (or --only ours)
    .venv/bin/python benchmarks/qat_torch.py --models digits --repeats 3

NNCF 2.19 is the last NNCF with ``create_compressed_model``; it lives in its own venv
(``benchmarks/.cache/venv-nncf-2.19.0``, built on first use by ``_peer_venv.ensure_nncf2_venv``)
and runs with ``NNCF_TORCH_LEGACY_TRACING=1``.

For each model this parent process
1. trains the FP32 model once (deterministic, seconds) and saves its weights and the digits
   tensors to ``benchmarks/.cache/qat_torch/``, so both tools start from identical weights and
   data; writes the NNCF config both tools get (``quantization`` with the tool's defaults,
   ``initializer.range.num_init_samples`` 256, BatchNorm adaptation off by default);
2. runs ``benchmarks/_qat_worker.py`` in a fresh process per tool (tools alternate with
   ``--repeats``): the same code, ``import nncompress as nncf`` / ``import nncf``. Each worker times
   ``create_compressed_model`` (range init included), measures accuracy after init and after QAT,
   exports ``ctrl.export_model("x.onnx")`` and converts it with ``openvino.convert_model``, and
   times training steps of the compressed model against the FP32 model, interleaved;
3. measures each tool's IR in this one process with OpenVINO: test accuracy, top-1 agreement
   with the tool's own torch model, and the share of compute layers that run in INT8;
4. prints a table of the figures and ratios with the goals of the issue "Training-time
   compression", and writes all figures to JSON (``--out``, default
   ``benchmarks/.cache/results/qat_torch.json``).

See benchmarks/README.md for the meaning of every number.
"""

from __future__ import annotations

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
from ptq_torch import _fmt, _get, compare_row, print_table, runtime_precisions  # noqa: E402

WORK_DIR = CACHE_DIR / "qat_torch"
DEFAULT_OUT = CACHE_DIR / "results" / "qat_torch.json"
TOOLS = ("ours", "nncf")
MODELS = ("digits", "digits_resnet")
# a miss by less than this is shown as "~ noise", not "MISS"
TIME_NOISE = 0.05  # relative, for the step-time goals
NOISY_IQR = 1.3  # step times whose upper quartile exceeds the lower one by this factor are flagged


# ----------------------------------------------------------------------------------------------
# step 1: inputs
# ----------------------------------------------------------------------------------------------


def prepare(model_name: str, args) -> tuple[Path, Path, Path, dict]:
    """Train the FP32 model; save weights, data tensors and the config; return their paths."""
    import torch
    from data import digits_tensors, train_digits_model
    from models import DigitsCNN, DigitsResNet

    torch.manual_seed(args.seed)
    model = (DigitsCNN if model_name == "digits" else DigitsResNet)()
    t0 = time.perf_counter()
    train_digits_model(model, epochs=args.pretrain_epochs, seed=args.seed)
    train_s = time.perf_counter() - t0
    weights = WORK_DIR / f"{model_name}_fp32_seed{args.seed}_ep{args.pretrain_epochs}.pt"
    torch.save(model.state_dict(), weights)
    x_tr, y_tr, x_te, y_te = digits_tensors(args.seed)
    data_path = WORK_DIR / "digits_data.pt"
    torch.save({"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, data_path)
    with torch.no_grad():
        ref = model.eval()(x_te)
    config = {
        "input_info": {"sample_size": [1, *x_tr.shape[1:]]},
        "compression": {
            "algorithm": "quantization",
            "initializer": {
                "range": {"num_init_samples": args.num_init_samples},
                "batchnorm_adaptation": {"num_bn_adaptation_samples": args.bn_adapt_samples},
            },
        },
    }
    config_path = WORK_DIR / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    info = {
        "pretrain_s": train_s,
        "pretrain_epochs": args.pretrain_epochs,
        "seed": args.seed,
        "fp32_accuracy": float((ref.argmax(1) == y_te).double().mean()),
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "config": config,
    }
    return weights, data_path, config_path, info


# ----------------------------------------------------------------------------------------------
# step 2: the workers
# ----------------------------------------------------------------------------------------------


def run_worker(tool: str, python: Path, model_name: str, paths: tuple, args, rep: int = 0) -> dict:
    weights, data_path, config_path = paths
    suffix = f"-r{rep}" if rep else ""
    stem = WORK_DIR / f"{model_name}-{tool}{suffix}"
    out, log = stem.with_suffix(".json"), stem.with_suffix(".log")
    onnx, ir = Path(f"{stem}.onnx"), Path(f"{stem}-int8.xml")
    logits = Path(f"{stem}-logits.pt")
    for stale in (out, onnx, ir, ir.with_suffix(".bin"), logits):
        stale.unlink(missing_ok=True)
    cmd = [str(python), str(BENCH_DIR / "_qat_worker.py"), "--tool", tool, "--model", model_name]
    cmd += ["--weights", str(weights), "--data", str(data_path), "--config", str(config_path)]
    cmd += ["--out", str(out), "--logits-out", str(logits), "--onnx-out", str(onnx), "--ir-out", str(ir)]
    cmd += ["--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size)]
    cmd += ["--seed", str(args.seed), "--warmup-steps", str(args.warmup_steps)]
    cmd += ["--rounds", str(args.rounds), "--block-steps", str(args.block_steps)]
    env = nncf2_env() if tool == "nncf" else dict(os.environ)
    env.pop("PYTHONPATH", None)  # each venv sees only its own packages
    env.setdefault("TQDM_DISABLE", "1")
    if args.threads:  # torch reads it at start-up; the worker records torch.get_num_threads()
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    print(f"  [{model_name}/{tool}] compress + QAT ... (log: {log.relative_to(REPO)})", flush=True)
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
    cpus = os.cpu_count() or 1
    if "create_s" in result:
        load = result["create_cold"]["loadavg_before"][0]
        print(
            f"  [{model_name}/{tool}] create_compressed_model {result['create_s']:.3f} s "
            f"(2nd call {result['create_warm_s']:.3f} s), QAT accuracy "
            f"{_fmt(_get(result, 'qat_eval', 'accuracy'), 4)}, step ratio {_fmt(result.get('step_ratio'))} "
            f"({_fmt(result.get('step_compressed_ms'))} / {_fmt(result.get('step_fp32_ms'))} ms), "
            f"load average {load:.1f} / {_fmt((result.get('loadavg_before_steps') or [None])[0], 2)}",
            flush=True,
        )
        loads = [load, *(result.get("loadavg_before_steps") or [])[:1]]
        if max(loads) > cpus:  # more runnable threads than cores (this worker counts for one)
            print(
                f"  [{model_name}/{tool}] warning: the machine was busy; the timings are skewed", flush=True
            )
        for variant, st in (result.get("step") or {}).items():
            if isinstance(st, dict) and st["p75_ms"] > NOISY_IQR * st["p25_ms"]:
                print(
                    f"  [{model_name}/{tool}] warning: {variant} step times are spread "
                    f"(quartiles {st['p25_ms']:.2f} .. {st['p75_ms']:.2f} ms): machine noise",
                    flush=True,
                )
    for key, err in result.get("errors", {}).items():
        if not key.endswith("traceback"):
            print(f"  [{model_name}/{tool}] ERROR in {key}: {err}", flush=True)
    return result


TIMING_KEYS = (
    "create_s",
    "create_warm_s",
    "step_fp32_ms",
    "step_compressed_ms",
    "step_ratio",
    "step_ratio_of_medians",
    "step_ratio_p10",
    "import_s",
)


def combine_repeats(runs: list[dict]) -> dict:
    """The first run's result (accuracy, export: deterministic), with timings over all repeats:
    the minimum create time (least disturbed run), the median step times and step ratio; every
    run's figures kept under ``repeats``."""
    result = dict(runs[0])
    ok = [r for r in runs if "create_s" in r]
    if len(runs) > 1 and ok:
        result["repeats"] = [
            {k: r.get(k) for k in (*TIMING_KEYS, "worker_rc")}
            | {"qat_accuracy": _get(r, "qat_eval", "accuracy")}
            for r in runs
        ]
        for key in ("create_s", "create_warm_s", "import_s"):
            result[key] = min(r[key] for r in ok)
        stepped = [r for r in ok if "step_ratio" in r]
        for key in [k for k in TIMING_KEYS if k.startswith("step_")]:
            if stepped:
                result[key] = statistics.median(r[key] for r in stepped)
        bad = [r for r in runs if r.get("worker_rc") != 0]
        if bad:
            result["worker_rc"] = bad[0]["worker_rc"]
    return result


# ----------------------------------------------------------------------------------------------
# step 3: OpenVINO, in this process
# ----------------------------------------------------------------------------------------------


def openvino_stage(model_name: str, data_path: Path, workers: dict, batch: int) -> dict:
    import numpy as np
    import openvino as ov
    import torch

    data = torch.load(data_path, map_location="cpu", weights_only=True)
    x_te, y_te = data["x_test"], data["y_test"]
    core = ov.Core()
    res: dict = {"openvino_version": ov.get_version(), "variants": {}, "errors": {}}
    for tool, wres in workers.items():
        ir = wres.get("ir_path")
        if not ir or not Path(ir).exists():
            continue
        try:
            model = core.read_model(ir)
            model.reshape([batch, *x_te.shape[1:]])
            compiled = core.compile_model(model, "CPU")
            req = compiled.create_infer_request()
            outs = []
            for i in range(0, len(x_te), batch):
                chunk = x_te[i : i + batch].numpy()
                n = len(chunk)
                if n < batch:  # pad the last chunk to the compiled batch
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
                outs.append(np.array(req.infer({0: chunk})[compiled.output(0)][:n]))
            out = torch.from_numpy(np.concatenate(outs))
            info = {
                "accuracy": float((out.argmax(1) == y_te).double().mean()),
                "errors": int((out.argmax(1) != y_te).sum()),
                **runtime_precisions(compiled),
            }
            logits = wres.get("logits_path")
            if logits and Path(logits).exists():
                own = torch.load(logits, map_location="cpu", weights_only=True)
                info["top1_agreement_with_own_torch"] = float(
                    (out.argmax(1) == own.argmax(1)).double().mean()
                )
                info["max_abs_diff_vs_own_torch"] = float((out - own).abs().max())
            res["variants"][tool] = info
        except Exception as exc:
            res["errors"][tool] = f"{type(exc).__name__}: {exc}"
    return res


# ----------------------------------------------------------------------------------------------
# step 4: report
# ----------------------------------------------------------------------------------------------


def summarize(model_name: str, entry: dict) -> list[dict]:
    """Rows: metric, ours, nncf, comparison, goal, status."""
    w, v = entry["workers"], _get(entry, "openvino", "variants", default={})
    rows: list[dict] = []

    def row(*args, **kwargs):
        rows.append(compare_row(model_name, *args, **kwargs))

    def both(*path):
        return _get(w, "ours", *path), _get(w, "nncf", *path)

    row("create_compressed_model wall time, s", *both("create_s"), "ratio", "<= 0.5")
    row("  same, 2nd call in the process, s", *both("create_warm_s"), "ratio")
    row("  CPU time, s", *both("create_cold", "cpu_s"), "ratio")
    row("  peak RSS increase, MiB", *both("create_cold", "peak_extra_mb"), "ratio")
    row("import time, s", *both("import_s"), "ratio")
    row("FP32 train step, ms (each worker)", *both("step_fp32_ms"), "ratio")
    row("compressed train step, ms", *both("step_compressed_ms"), "ratio")
    r_o, r_n = both("step_ratio")
    row("step time ratio compressed/FP32 (paired)", r_o, r_n, "ratio", "<= 0.7", tol=TIME_NOISE)
    row("  same, ratio of the overall medians", *both("step_ratio_of_medians"), "ratio")
    row("  same, ratio of the 10th percentiles", *both("step_ratio_p10"), "ratio")
    e_o = r_o - 1 if r_o is not None else None
    e_n = r_n - 1 if r_n is not None else None
    row(
        "step overhead (ratio - 1)",
        e_o,
        e_n,
        "ratio",
        "<= 0.7",
        tol=TIME_NOISE,
        compare=e_o / e_n if e_o is not None and e_n else None,
    )
    q_o, q_n = both("qat_epoch_s")
    f_o, f_n = both("fp32_finetune_epoch_s")
    row(
        "QAT epoch / FP32 epoch time (with loader)",
        sum(q_o) / sum(f_o) if q_o and f_o else None,
        sum(q_n) / sum(f_n) if q_n and f_n else None,
        "ratio",
    )
    row("torch accuracy after init", *both("init_eval", "accuracy"), "diff", digits=4)
    # one test image either way is within noise (a different rounding flips one borderline digit)
    n_test = _get(entry, "prepare", "n_test") or 0
    acc_tol = 1.01 / n_test if n_test else 0.0
    row("torch accuracy after QAT", *both("qat_eval", "accuracy"), "diff", ">= 0", digits=4, tol=acc_tol)
    row("torch test loss after QAT", *both("qat_eval", "loss"), "diff", digits=4)
    row("FP32 fine-tuned accuracy (reference)", *both("fp32_finetune_eval", "accuracy"), "diff", digits=4)
    row(
        "OV IR accuracy",
        _get(v, "ours", "accuracy"),
        _get(v, "nncf", "accuracy"),
        "diff",
        ">= 0",
        digits=4,
        tol=acc_tol,
    )
    row(
        "OV IR top-1 agreement with own torch",
        _get(v, "ours", "top1_agreement_with_own_torch"),
        _get(v, "nncf", "top1_agreement_with_own_torch"),
        "diff",
        digits=4,
    )
    row(
        "OV compute layers run in INT8 (share)",
        _get(v, "ours", "int8_share"),
        _get(v, "nncf", "int8_share"),
        "diff",
        ">= 0",
    )
    row("IR FakeQuantize ops", *both("ir_fake_quantize_count"))
    return rows


# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 QAT epoch, fewer timed steps")
    p.add_argument("--only", choices=TOOLS, help="run one tool only")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--repeats", type=int, default=1, help="worker runs per tool (alternating)")
    p.add_argument("--epochs", type=int, help="QAT epochs (default 3, quick 1)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate for QAT (cosine to 0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-init-samples", type=int, default=256, help="initializer.range.num_init_samples")
    p.add_argument("--bn-adapt-samples", type=int, default=0, help="num_bn_adaptation_samples (0: off)")
    p.add_argument("--pretrain-epochs", type=int, default=15, help="FP32 training in the parent")
    p.add_argument("--warmup-steps", type=int, help="untimed steps per variant (default 20, quick 10)")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 40, quick 12)")
    p.add_argument("--block-steps", type=int, help="timed steps per variant per round (default 8, quick 5)")
    p.add_argument("--ov-batch", type=int, default=50, help="batch of the OpenVINO accuracy runs")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (OMP_NUM_THREADS) of the workers; default 1, 0: torch's choice",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker-timeout", type=int, default=1800)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    args.epochs = args.epochs or (1 if args.quick else 3)
    args.warmup_steps = args.warmup_steps or (10 if args.quick else 20)
    args.rounds = args.rounds or (12 if args.quick else 40)
    args.block_steps = args.block_steps or (5 if args.quick else 8)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    tools = [args.only] if args.only else list(TOOLS)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    pythons = {}
    if "ours" in tools:
        pythons["ours"] = Path(sys.executable)
    if "nncf" in tools:
        pythons["nncf"] = ensure_nncf2_venv()

    import openvino as ov
    import torch

    report: dict = {
        "benchmark": "qat_torch",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "peer": f"nncf=={NNCF2_VERSION}",
        "settings": {
            k: getattr(args, k)
            for k in (
                "epochs",
                "lr",
                "batch_size",
                "num_init_samples",
                "bn_adapt_samples",
                "pretrain_epochs",
                "warmup_steps",
                "rounds",
                "block_steps",
                "repeats",
                "threads",
                "seed",
            )
        },
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "openvino": ov.get_version()},
        "models": {},
    }
    all_rows: list[dict] = []
    for model_name in args.models:
        print(f"[{model_name}] training the FP32 model ({args.pretrain_epochs} epochs)", flush=True)
        weights, data_path, config_path, info = prepare(model_name, args)
        entry: dict = {"prepare": info, "workers": {}}
        runs: dict[str, list[dict]] = {tool: [] for tool in tools}
        for rep in range(args.repeats):  # tools alternate, so that slow phases of the machine hit both
            order = tools if rep % 2 == 0 else tools[::-1]
            for tool in order:
                paths = (weights, data_path, config_path)
                runs[tool].append(run_worker(tool, pythons[tool], model_name, paths, args, rep))
        for tool in tools:
            entry["workers"][tool] = combine_repeats(runs[tool])
        entry["openvino"] = openvino_stage(model_name, data_path, entry["workers"], args.ov_batch)
        for key, err in entry["openvino"]["errors"].items():
            print(f"  [{model_name}] OpenVINO ERROR {key}: {err}", flush=True)
        entry["rows"] = summarize(model_name, entry)
        all_rows += entry["rows"]
        report["models"][model_name] = entry

    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print()
    fp32 = ", ".join(f"{m} {e['prepare']['fp32_accuracy']:.4f}" for m, e in report["models"].items())
    print(f"FP32 test accuracy before QAT: {fp32} ({args.epochs} QAT epochs, batch {args.batch_size})")
    print_table(all_rows)
    print(
        "\nstep time goal: the issue's wording, (ours compressed/FP32) / (NNCF compressed/FP32) <= 0.7;"
        "\n'step overhead (ratio - 1)' shows the excess-based reading, (ours ratio-1)/(NNCF ratio-1) <= 0.7."
    )
    print(f"results: {args.out}")
    failed = [
        f"{m}/{t}"
        for m, e in report["models"].items()
        for t, w in e["workers"].items()
        if w.get("worker_rc") != 0 or "create_s" not in w
    ]
    if failed:
        print(f"failed runs: {', '.join(failed)} (see the logs in {WORK_DIR.relative_to(REPO)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
