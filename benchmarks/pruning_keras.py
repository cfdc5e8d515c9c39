"""Keras filter pruning that makes the exported model smaller and faster (issue 9): ours only.

    .venv/bin/python benchmarks/pruning_keras.py                 # both models, ~1-2 min
    .venv/bin/python benchmarks/pruning_keras.py --quick         # fewer images and latency rounds
    .venv/bin/python benchmarks/pruning_keras.py --models mobilenet --size 96

Why no NNCF column: NNCF 2.19's TensorFlow filter pruning only zeroes the pruned filters (masks on
the kernels); its exported model keeps every channel, so its size and speed are the dense model's
by construction. Nothing is installed for it; ``--only nncf`` prints this note and exits 0.

Models (``--models``): ``mobilenet`` and ``resnet``, the MobileNetV2-style and ResNet-style Keras
models of ``tests/tensorflow/tf_models.py`` (imported by path), built for ``--size`` x ``--size`` x 3
inputs (64 by default). Data: sklearn's 8x8 digits upsampled (bilinear) to that size and repeated
over 3 channels (1400 train / 397 test images; ``--quick``: 512 train).

For each model this script
1. trains the dense model (Adam 3e-3, batch 64, ``--pretrain-epochs`` epochs, seed 0);
2. ``nncompress.tensorflow.create_compressed_model`` with ``{"algorithm": "filter_pruning",
   "pruning_init": 0.1, "params": {"schedule": "baseline", "num_init_steps": 1, "pruning_target":
   0.5, "prune_first_conv": true, "prune_downsample_convs": true}}`` (the data registered with
   ``register_default_init_args`` for BatchNorm re-estimation), then 2 epochs of ``fit`` with
   ``create_compression_callbacks`` (level 0.1 in the first, 0.5 in the second);
3. exports the pruned model with ``ctrl.export_model("<model>-pruned.xml")`` and the dense one with
   ``openvino.save_model(openvino.convert_model(model), compress_to_fp16=False)``;
4. compiles both IRs (``INFERENCE_PRECISION_HINT=f32``, ``PERFORMANCE_HINT=LATENCY``) and measures
   sync latency at batch 1 and 32 in alternating A/B rounds (``ptq_torch.measure_latency``),
   median of single calls; prints one table and writes ``benchmarks/.cache/results/pruning_keras.json``.

Accuracy is information only: the tiny test models (8-16 channels) stay near chance on 64x64
upsampled digits after these few epochs (their BatchNorm moving statistics, momentum 0.99, lag
behind); what is measured here (size, FLOPs, latency) does not depend on the weights.

Parameters: Keras ``count_params()`` of the dense and the stripped (``ctrl.strip()``) model; FLOPs:
``ctrl.statistics().filter_pruning`` (``flops_now / flops``). Exit status: non-zero when a model
failed (the table still shows what ran).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from pruning_torch import print_table  # noqa: E402
from ptq_torch import FP32_EXACT, LATENCY_CONFIG, _fmt, _get, measure_latency  # noqa: E402

CACHE_DIR = BENCH_DIR / ".cache"
WORK_DIR = CACHE_DIR / "pruning_keras"
DEFAULT_OUT = CACHE_DIR / "results" / "pruning_keras.json"
MODELS = ("mobilenet", "resnet")
LATENCY_GOAL = 0.65  # the PyTorch pruning issue's goal, pruned / dense latency at level 0.5
TIME_NOISE = 0.05
ACCURACY_NOTE = (
    "accuracy is information only: the tiny test models (8-16 channels, BatchNorm momentum 0.99) "
    "stay near chance on 64x64 upsampled digits after a few epochs; size, FLOPs and latency do "
    "not depend on the weights."
)
NNCF_NOTE = (
    "NNCF 2.19's TensorFlow filter pruning only zeroes filters: its exported model keeps the dense "
    "size and speed by construction, so there is no NNCF column."
)


def _tf_models():
    """``tests/tensorflow/tf_models.py``, imported by path (tests/ is not a package)."""
    path = REPO / "tests" / "tensorflow" / "tf_models.py"
    spec = importlib.util.spec_from_file_location("tf_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def digits_images(size: int, seed: int, n_train: int):
    """Digits upsampled to ``size`` x ``size`` x 3 (NHWC, float32 in [0, 1])."""
    import numpy as np
    import tensorflow as tf

    x_tr, y_tr, x_te, y_te = _tf_models().digits(seed)

    def up(x):
        x = tf.image.resize(x, (size, size), method="bilinear").numpy()
        return np.ascontiguousarray(np.repeat(x, 3, axis=-1), dtype="float32")

    return up(x_tr[:n_train]), y_tr[:n_train], up(x_te), y_te


def accuracy(model, x, y) -> float:
    import numpy as np

    return float((np.argmax(model.predict(x, batch_size=128, verbose=0), axis=1) == y).mean())


def run_model(name: str, data, args) -> dict:
    import keras
    import numpy as np
    import openvino as ov

    from nncompress import NNCFConfig
    from nncompress.tensorflow import (
        create_compressed_model,
        create_compression_callbacks,
        register_default_init_args,
    )

    x_tr, y_tr, x_te, y_te = data
    shape = x_tr.shape[1:]
    tfm = _tf_models()
    build = {"mobilenet": tfm.mobilenet_like, "resnet": tfm.resnet_like}[name]
    res: dict = {"input_shape": list(shape)}

    def compile_(m):
        m.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    t0 = time.perf_counter()
    model = build(input_shape=shape, seed=args.seed)
    compile_(model)
    model.fit(x_tr, y_tr, batch_size=64, epochs=args.pretrain_epochs, shuffle=True, verbose=0)
    res["pretrain_s"] = time.perf_counter() - t0
    res["dense_accuracy"] = accuracy(model, x_te, y_te)
    res["dense_params"] = int(model.count_params())

    section = {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "params": {
            "schedule": "baseline",
            "num_init_steps": 1,
            "pruning_target": args.target,
            "prune_first_conv": True,
            "prune_downsample_convs": True,
        },
    }
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, *shape]}, "compression": section})
    batches = [(x_tr[i : i + 64], y_tr[i : i + 64]) for i in range(0, len(x_tr), 64)]
    config = register_default_init_args(config, batches, batch_size=64)
    res["config"] = section
    t0 = time.perf_counter()
    ctrl, cmodel = create_compressed_model(model, config)
    res["create_s"] = time.perf_counter() - t0
    res["accuracy_after_create"] = accuracy(cmodel, x_te, y_te)
    compile_(cmodel)
    t0 = time.perf_counter()
    cmodel.fit(
        x_tr,
        y_tr,
        batch_size=64,
        epochs=args.epochs,
        shuffle=True,
        verbose=0,
        callbacks=create_compression_callbacks(ctrl),
    )
    res["fit_s"] = time.perf_counter() - t0
    res["final_level"] = float(ctrl.pruning_level)
    res["pruned_accuracy"] = accuracy(cmodel, x_te, y_te)
    st = ctrl.statistics().filter_pruning
    res["stats"] = {
        "flops": st.flops,
        "flops_now": st.flops_now,
        "params": st.params,
        "params_now": st.params_now,
    }
    res["pruned_params"] = int(ctrl.strip().count_params())

    ir_pruned = Path(ctrl.export_model(WORK_DIR / f"{name}-pruned.xml"))
    ir_dense = WORK_DIR / f"{name}-dense.xml"
    ov.save_model(ov.convert_model(model), str(ir_dense), compress_to_fp16=False)
    res["bin_bytes"] = {
        "dense": ir_dense.with_suffix(".bin").stat().st_size,
        "pruned": ir_pruned.with_suffix(".bin").stat().st_size,
    }

    core = ov.Core()
    res["latency"] = {}
    for batch in args.batches:
        compiled, inputs = {}, {}
        x = np.ascontiguousarray(np.resize(x_te, (batch, *shape)))
        for key, ir in (("dense", ir_dense), ("pruned", ir_pruned)):
            m = core.read_model(str(ir))
            m.reshape([batch, *shape])
            compiled[key] = core.compile_model(m, "CPU", {**LATENCY_CONFIG, **FP32_EXACT})
            inputs[key] = {0: x}
        out_d = compiled["dense"](inputs["dense"])[0]
        out_p = compiled["pruned"](inputs["pruned"])[0]
        ref = cmodel.predict(x, verbose=0)
        res[f"ov_pruned_max_abs_err_b{batch}"] = float(np.max(np.abs(out_p - ref)))
        res[f"ov_dense_shape_b{batch}"] = list(out_d.shape)
        print(f"  [{name}] OpenVINO latency, batch {batch} ...", flush=True)
        res["latency"][f"b{batch}"] = measure_latency(
            compiled, inputs, args.rounds, args.block_s, args.warmup
        )
    return res


def summarize(name: str, r: dict) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(metric, dense, pruned, ratio=None, goal="", status=""):
        rows.append([name, metric, _fmt(dense), _fmt(pruned), _fmt(ratio), goal, status])

    def status(v, target):
        if v is None:
            return ""
        return "ok" if v <= target else ("~ noise" if v <= target * (1 + TIME_NOISE) else "MISS")

    if "error" in r:
        rows.append([name, "ERROR", r["error"], "", "", "", "MISS"])
        return rows
    row("test accuracy (information only; see note)", r["dense_accuracy"], r["pruned_accuracy"])
    row("pruning level", 0.0, r["final_level"])
    dp, pp = r["dense_params"], r["pruned_params"]
    row("params (Keras count_params)", dp, pp, pp / dp)
    b = r["bin_bytes"]
    row("IR .bin bytes", b["dense"], b["pruned"], b["pruned"] / b["dense"])
    s = r["stats"]
    row(
        "FLOPs (ctrl.statistics)",
        s["flops"],
        s["flops_now"],
        s["flops_now"] / s["flops"] if s["flops"] else None,
    )
    err = max(v for k, v in r.items() if k.startswith("ov_pruned_max_abs_err"))
    row("pruned IR vs Keras pruned model, max |diff|", None, err)
    for key, lat in r["latency"].items():
        d, p = _get(lat, "dense", "median_ms"), _get(lat, "pruned", "median_ms")
        ratio = p / d if p and d else None
        row(
            f"OV latency {key} f32, ms",
            d,
            p,
            ratio,
            f"<= {LATENCY_GOAL} (PyTorch pruning issue's goal)",
            status(ratio, LATENCY_GOAL),
        )
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer training images and latency rounds")
    parser.add_argument(
        "--only", choices=("ours", "nncf"), help="'nncf' only prints why there is no NNCF run"
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument(
        "--epochs", type=int, default=2, help="fit epochs with pruning (level reached at the 2nd)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--block-s", type=float)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.n_train = 512 if args.quick else 1400
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.block_s = args.block_s or (0.1 if args.quick else 0.3)
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.only == "nncf":
        print(NNCF_NOTE)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TF 2.21's oneDNN kernels corrupt the heap training resnet_like at 64x64 (free(): invalid
    # pointer / abort in plain keras fit, before any compression); the Eigen kernels do not.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import openvino as ov

    report: dict = {
        "openvino_version": ov.get_version(),
        "note": NNCF_NOTE,
        "args": {k: str(v) for k, v in vars(args).items()},
        "models": {},
    }
    data = digits_images(args.size, args.seed, args.n_train)
    rows: list[list[str]] = []
    failed = False
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"[{name}] train dense, prune, fit, export ...", flush=True)
        t0 = time.perf_counter()
        try:
            r = run_model(name, data, args)
        except Exception as exc:
            failed = True
            r = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(r["traceback"], flush=True)
        r["wall_s"] = time.perf_counter() - t0
        if "final_level" in r and abs(r["final_level"] - args.target) > 1e-6:
            failed = True
            r["error_level"] = f"level {r['final_level']} != target {args.target}"
        report["models"][name] = r
        rows += summarize(name, r)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    load = os.getloadavg()
    report["loadavg_end"] = load
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print()
    print_table(rows, ["model", "metric", "dense", "pruned", "pruned/dense", "goal", ""])
    print(f"\nnote: {NNCF_NOTE}")
    print(f"note: {ACCURACY_NOTE}")
    print(f"1-min load average at the end: {load[0]:.2f} (cores: {os.cpu_count()}); JSON: {args.out}")
    if load[0] > (os.cpu_count() or 1) / 2:
        print("warning: the machine was busy; latency figures are noisy (rerun)")
    for name, r in report["models"].items():
        for key, lat in r.get("latency", {}).items():
            for variant, s in lat.items():
                if s["p75_ms"] > 1.3 * s["p25_ms"]:
                    print(
                        f"warning: [{name}] {variant} {key} quartiles {s['p25_ms']:.3f}..{s['p75_ms']:.3f} ms: noisy"
                    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
