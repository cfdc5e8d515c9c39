"""One training-time-compression (QAT) run of one tool on one model, in its own process.

Started by ``benchmarks/qat_torch.py``, once with our venv (``--tool ours``: ``import nncompress
as nncf``, ``from nncompress.torch import ...``) and once with NNCF 2.19's venv (``--tool nncf``:
``import nncf``, ``from nncf.torch import ...``; run with ``NNCF_TORCH_LEGACY_TRACING=1``).
Everything after the import lines is the same code for both tools: our API mirrors NNCF 2.x.

Steps (the model is always a fresh copy of the same pretrained FP32 weights, written by the parent):
1. ``create_compressed_model`` with the config of ``--config`` (written by the parent; the same
   for both tools) and ``register_default_init_args(config, train_loader)``, twice: the first call
   in the process (cold: what a training script sees; the tool is imported beforehand) and a
   second one on another fresh model (warm); wall time, CPU time and peak RSS of each. Graph dumps
   are off (``dump_graphs=False``): NNCF writes ``.dot`` files to ``log_dir`` (default ``.``) and
   ours writes none without a ``log_dir``, which would not compare like with like;
2. test accuracy / cross-entropy of the compressed model right after initialization;
3. quantization-aware training of the compressed model, and FP32 fine-tuning of a fresh FP32 copy
   for reference: the same optimizer (Adam, cosine LR), epochs, batch size and batch order
   (seeded loader). The compressed loop is NNCF's: ``ctrl.scheduler.epoch_step()`` per epoch,
   ``ctrl.scheduler.step()`` per batch, loss + ``ctrl.loss()``. Epoch wall times are recorded;
4. test accuracy / cross-entropy after QAT, the test logits (saved for the parent) and the
   ``ctrl.statistics()`` text;
5. export: ``ctrl.export_model("<name>.onnx")`` (NNCF 2.19 exports ONNX only), then
   ``openvino.convert_model(<onnx>)`` saved as IR for the parent, which measures IR accuracy and
   INT8 execution for both tools in one process;
6. training step time: the QAT-trained compressed model and the fresh FP32 copy, each with a new
   Adam optimizer, on the same pre-made batches (no data loading inside the step). A step is
   ``zero_grad``, forward, cross-entropy (+ ``ctrl.loss()`` and ``ctrl.scheduler.step()`` for the
   compressed model), ``backward``, ``optimizer.step``. After warm-up steps, ``--rounds`` blocks
   of ``--block-steps`` steps per variant alternate (the first variant alternating too), so that
   machine noise hits both alike; the median single-step time of each is reported, and the step
   ratio compressed/FP32 is the median over the rounds of the ratio of the two blocks' medians
   (paired: a slow phase of the machine raises both blocks of a round alike). The ratio of the
   overall medians and of the 10th percentiles (the least disturbed steps) are kept too.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(BENCH_DIR))

from _ptq_worker import PeakRSS  # noqa: E402


def build_model(name: str, weights: str):
    import torch
    from models import DigitsCNN, DigitsResNet

    model = {"digits": DigitsCNN, "digits_resnet": DigitsResNet}[name]()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model


def _loader(x, y, batch_size: int, seed: int, shuffle: bool = True):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def evaluate(model, x, y) -> tuple[dict, object]:
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + 150]) for i in range(0, len(x), 150)])
    res = {
        "accuracy": float((out.argmax(1) == y).double().mean()),
        "loss": float(F.cross_entropy(out, y)),
        "errors": int((out.argmax(1) != y).sum()),
    }
    return res, out


def _loss_value(loss) -> object:
    """``ctrl.loss()`` is a callable loss object in NNCF (and in ours); its value is a tensor or a number."""
    return loss() if callable(loss) else loss


def train(model, ctrl, x, y, args) -> list[float]:
    """Fine-tune ``model`` (with the compression controller's scheduler and loss when ``ctrl``);
    returns the wall time of every epoch (data loading included)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    loader = _loader(x, y, args.batch_size, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs * len(loader)))
    epoch_s = []
    for _ in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        if ctrl is not None:
            ctrl.scheduler.epoch_step()
        for xb, yb in loader:
            if ctrl is not None:
                ctrl.scheduler.step()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            if ctrl is not None:
                loss = loss + _loss_value(ctrl.loss)
            loss.backward()
            opt.step()
            sched.step()
        epoch_s.append(time.perf_counter() - t0)
    model.eval()
    return epoch_s


def step_times(variants: dict, batches: list, args) -> dict:
    """Median single training-step time (ms) per variant, interleaved; see the module docstring."""
    import torch
    import torch.nn.functional as F

    state = {}
    for name, (model, ctrl) in variants.items():
        model.train()
        state[name] = (model, ctrl, torch.optim.Adam(model.parameters(), lr=1e-5))

    def step(name: str, xb, yb) -> None:
        model, ctrl, opt = state[name]
        if ctrl is not None:
            ctrl.scheduler.step()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        if ctrl is not None:
            loss = loss + _loss_value(ctrl.loss)
        loss.backward()
        opt.step()

    names = list(variants)
    for name in names:
        for i in range(args.warmup_steps):
            step(name, *batches[i % len(batches)])
    times: dict[str, list[float]] = {name: [] for name in names}
    blocks: dict[str, list[float]] = {name: [] for name in names}  # median of each round's block
    k = 0
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            block = []
            for j in range(args.block_steps):
                xb, yb = batches[(k + j) % len(batches)]
                t0 = time.perf_counter()
                step(name, xb, yb)
                block.append((time.perf_counter() - t0) * 1e3)
            times[name] += block
            blocks[name].append(statistics.median(block))
        k += args.block_steps
    res: dict = {}
    if len(names) == 2:  # paired: the two blocks of a round ran back to back, under the same load
        a, b = names
        res["paired_ratio"] = statistics.median(y / x for x, y in zip(blocks[a], blocks[b]))
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        res[name] = {
            "median_ms": statistics.median(ts),
            "min_ms": min(ts),
            "p10_ms": statistics.quantiles(ts, n=10)[0],
            "p25_ms": q[0],
            "p75_ms": q[2],
            "mean_ms": statistics.fmean(ts),
            "n": len(ts),
        }
    for model, _, _ in state.values():
        model.eval()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tool", choices=["ours", "nncf"], required=True)
    parser.add_argument("--model", choices=["digits", "digits_resnet"], required=True)
    parser.add_argument("--weights", required=True, help="pretrained FP32 state_dict (torch.save)")
    parser.add_argument("--data", required=True, help="data file prepared by the parent (torch.save)")
    parser.add_argument("--config", required=True, help="NNCF config JSON (without init args)")
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--logits-out", help="where to save the test logits after QAT (torch.save)")
    parser.add_argument("--onnx-out", help="where ctrl.export_model writes the ONNX model")
    parser.add_argument("--ir-out", help="where to save the OpenVINO IR converted from the ONNX model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block-steps", type=int, default=8)
    args = parser.parse_args()

    result: dict = {
        "tool": args.tool,
        "model": args.model,
        "python": platform.python_version(),
        "pid": os.getpid(),
        "env_NNCF_TORCH_LEGACY_TRACING": os.environ.get("NNCF_TORCH_LEGACY_TRACING"),
        "errors": {},
    }

    def dump() -> None:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))

    # --- the tool: the only lines that differ between the two runs -----------------------------
    t0 = time.perf_counter()
    if args.tool == "nncf":
        import nncf
        from nncf.torch import create_compressed_model, register_default_init_args
    else:
        try:
            import nncompress as nncf
        except ImportError:  # not installed in this venv: use the working tree
            sys.path.insert(0, str(REPO / "src"))
            import nncompress as nncf
        from nncompress.torch import create_compressed_model, register_default_init_args
    NNCFConfig = nncf.NNCFConfig
    result["import_s"] = time.perf_counter() - t0
    result["tool_version"] = getattr(nncf, "__version__", "?")

    import openvino as ov
    import torch

    result["torch_version"] = torch.__version__
    result["openvino_version"] = ov.get_version()
    result["torch_threads"] = torch.get_num_threads()

    data = torch.load(args.data, map_location="cpu", weights_only=True)
    x_tr, y_tr, x_te, y_te = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    config_dict = json.loads(Path(args.config).read_text())
    result["config"] = config_dict
    result["n_params"] = sum(p.numel() for p in build_model(args.model, args.weights).parameters())

    def compress():
        """A fresh pretrained model, a fresh config with the init data; the timed call."""
        torch.manual_seed(args.seed)
        model = build_model(args.model, args.weights)
        config = NNCFConfig.from_dict(copy.deepcopy(config_dict))
        config = register_default_init_args(config, _loader(x_tr, y_tr, args.batch_size, args.seed))
        load = list(os.getloadavg())
        with PeakRSS() as mem:
            c0, t0 = time.process_time(), time.perf_counter()
            ctrl, cmodel = create_compressed_model(model, config, dump_graphs=False)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
        stats = {
            "wall_s": wall,
            "cpu_s": cpu,
            "peak_extra_mb": max(0.0, mem.peak_mb - mem.before_mb),
            "memory_method": mem.method,
            "loadavg_before": load,
        }
        return ctrl, cmodel, stats

    # --- 1. create_compressed_model: cold (first in the process), then warm ---------------------
    _, _, result["create_cold"] = compress()
    ctrl, model, result["create_warm"] = compress()
    result["create_s"] = result["create_cold"]["wall_s"]
    result["create_warm_s"] = result["create_warm"]["wall_s"]
    result["compressed_type"] = f"{type(model).__module__}.{type(model).__qualname__}"
    result["isinstance_of_input_class"] = isinstance(model, (type(build_model(args.model, args.weights)),))
    dump()

    # --- 2./3./4. accuracy after init, QAT, accuracy after QAT ----------------------------------
    fp32 = build_model(args.model, args.weights)
    result["fp32_eval"], _ = evaluate(fp32, x_te, y_te)
    result["init_eval"], _ = evaluate(model, x_te, y_te)
    result["loadavg_before_training"] = list(os.getloadavg())
    result["qat_epoch_s"] = train(model, ctrl, x_tr, y_tr, args)
    result["fp32_finetune_epoch_s"] = train(fp32, None, x_tr, y_tr, args)
    result["qat_eval"], logits = evaluate(model, x_te, y_te)
    result["fp32_finetune_eval"], _ = evaluate(fp32, x_te, y_te)
    if args.logits_out:
        torch.save(logits, args.logits_out)
        result["logits_path"] = args.logits_out
    try:
        stats = ctrl.statistics()
        result["ctrl_statistics"] = stats.to_str() if hasattr(stats, "to_str") else str(stats)
    except Exception as exc:
        result["errors"]["statistics"] = f"{type(exc).__name__}: {exc}"
    dump()

    # --- 5. export: ONNX via the controller, then OpenVINO --------------------------------------
    if args.onnx_out:
        try:
            t0 = time.perf_counter()
            ctrl.export_model(args.onnx_out)
            result["export_onnx_s"] = time.perf_counter() - t0
            ov_model = ov.convert_model(args.onnx_out)
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

    # --- 6. training step time, compressed vs FP32 ----------------------------------------------
    try:
        gen = torch.Generator().manual_seed(args.seed + 1)
        perm = torch.randperm(len(x_tr), generator=gen)
        batches = [
            (x_tr[perm[i : i + args.batch_size]], y_tr[perm[i : i + args.batch_size]])
            for i in range(0, len(x_tr) - args.batch_size + 1, args.batch_size)
        ]
        fp32_timing = build_model(args.model, args.weights)
        result["loadavg_before_steps"] = list(os.getloadavg())
        res = step_times({"fp32": (fp32_timing, None), "compressed": (model, ctrl)}, batches, args)
        result["loadavg_after_steps"] = list(os.getloadavg())
        result["step"] = res
        result["step_fp32_ms"] = res["fp32"]["median_ms"]
        result["step_compressed_ms"] = res["compressed"]["median_ms"]
        result["step_ratio_of_medians"] = res["compressed"]["median_ms"] / res["fp32"]["median_ms"]
        result["step_ratio_p10"] = res["compressed"]["p10_ms"] / res["fp32"]["p10_ms"]
        result["step_ratio"] = res["paired_ratio"]
    except Exception as exc:
        result["errors"]["step_time"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["errors"]["step_time_traceback"] = traceback.format_exc()
    dump()


if __name__ == "__main__":
    main()
