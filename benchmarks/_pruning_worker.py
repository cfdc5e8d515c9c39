"""One filter-pruning run of one tool on one model variant, in its own process.

Started by ``benchmarks/pruning_torch.py``, once with our venv (``--tool ours``: ``import nncompress
as nncf``, ``from nncompress.torch import ...``) and once with NNCF 2.19's venv (``--tool nncf``:
``import nncf``, ``from nncf.torch import ...``; run with ``NNCF_TORCH_LEGACY_TRACING=1``).
Everything after the import lines is the same code for both tools: our API mirrors NNCF 2.x.

Steps (the model is a fresh copy of the pretrained FP32 weights written by the parent):
1. ``register_default_init_args(config, train_loader)`` and ``create_compressed_model`` with the
   parent's ``filter_pruning`` config (the same JSON for both tools); wall time of the call;
2. test accuracy right after it (pruning at ``pruning_init``);
3. fine-tuning with the pruning schedule, NNCF's loop: ``ctrl.scheduler.epoch_step()`` per epoch,
   ``ctrl.scheduler.step()`` per batch, ``loss = cross_entropy + ctrl.loss()``; Adam with a
   cosine learning rate, seeded batch order; the pruning level of every epoch is recorded;
4. test accuracy after fine-tuning, ``ctrl.statistics()`` text;
5. export: ``ctrl.export_model("<name>.onnx")``, ``openvino.convert_model(<onnx>)`` saved as an
   IR (FP32 weights, no FP16 compression) for the parent, which measures sizes, FLOPs and
   latency of every IR in one process.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "examples"))


ARCHS = ("digits_resnet", "resnet18")


def make_model(arch: str, width: int):
    """``digits_resnet``: ``examples.models.DigitsResNet`` (stem + 3 basic blocks);
    ``resnet18``: ResNet-18 layout (stem, 4 stages of 2 basic blocks, widths w, 2w, 4w, 8w,
    stages 2-4 strided) for 1-channel 32x32 inputs, CIFAR-style (3x3 stem, no max-pool)."""
    import torch
    from models import DigitsResNet, _BasicBlock
    from torch import nn

    if arch == "digits_resnet":
        return DigitsResNet(width=width)
    if arch != "resnet18":
        raise ValueError(f"unknown arch {arch!r}; known: {ARCHS}")

    class ResNet18(nn.Module):
        def __init__(self, w: int, num_classes: int = 10):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)
            )
            layers, cin = [], w
            for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
                stride = 1 if i == 0 else 2
                layers.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout)))
                cin = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
            return self.fc(torch.flatten(self.pool(x), 1))

    return ResNet18(width)


def build_model(width: int, weights: str, arch: str = "digits_resnet"):
    import torch

    model = make_model(arch, width)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model


def removed_filters(ctrl, arch: str, width: int, weights: str) -> dict:
    """Filters gone from the convolutions of ``ctrl``'s stripped copy: physically removed (ours) or
    zeroed (NNCF 2.19), out of the dense model's filters."""
    import torch

    dense = {
        n: m.out_channels
        for n, m in build_model(width, weights, arch).named_modules()
        if isinstance(m, torch.nn.Conv2d)
    }
    stripped = ctrl.strip(do_copy=True)
    removed = 0
    for name, m in stripped.named_modules():
        if isinstance(m, torch.nn.Conv2d) and name in dense:
            w = m.weight.detach().flatten(1)
            removed += dense[name] - m.out_channels + int((w.abs().sum(1) == 0).sum())
    return {"removed": removed, "total": sum(dense.values())}


def _loader(x, y, batch_size: int, seed: int, shuffle: bool = True):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def evaluate(model, x, y) -> dict:
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + 150]) for i in range(0, len(x), 150)])
    return {
        "accuracy": float((out.argmax(1) == y).double().mean()),
        "loss": float(F.cross_entropy(out, y)),
        "errors": int((out.argmax(1) != y).sum()),
    }


def _loss_value(loss):
    return loss() if callable(loss) else loss


def _level(ctrl):
    for name in ("pruning_level", "compression_rate"):
        try:
            return float(getattr(ctrl, name))
        except Exception:
            continue
    return None


def finetune(model, ctrl, x, y, args) -> list[dict]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    loader = _loader(x, y, args.batch_size, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs * len(loader)))
    epochs = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        ctrl.scheduler.epoch_step()
        level = _level(ctrl)
        model.train()
        total, n = 0.0, 0
        for xb, yb in loader:
            ctrl.scheduler.step()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb) + _loss_value(ctrl.loss)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(yb)
            n += len(yb)
        epochs.append(
            {
                "epoch": epoch,
                "pruning_level": level,
                "train_loss": total / max(n, 1),
                "s": time.perf_counter() - t0,
            }
        )
        print(f"epoch {epoch}: level {level}, loss {total / max(n, 1):.4f}", flush=True)
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tool", choices=["ours", "nncf"], required=True)
    parser.add_argument("--arch", choices=ARCHS, default="digits_resnet")
    parser.add_argument("--width", type=int, default=16, help="base width of the model")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--onnx-out", required=True)
    parser.add_argument("--ir-out", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    result: dict = {
        "tool": args.tool,
        "arch": args.arch,
        "width": args.width,
        "python": platform.python_version(),
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
    result["import_s"] = time.perf_counter() - t0
    result["tool_version"] = getattr(nncf, "__version__", "?")

    import openvino as ov
    import torch

    result["torch_version"] = torch.__version__
    result["openvino_version"] = ov.get_version()
    result["torch_threads"] = torch.get_num_threads()
    result["env_NNCF_TORCH_LEGACY_TRACING"] = os.environ.get("NNCF_TORCH_LEGACY_TRACING")

    data = torch.load(args.data, map_location="cpu", weights_only=True)
    x_tr, y_tr, x_te, y_te = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    config_dict = json.loads(Path(args.config).read_text())
    result["config"] = config_dict

    torch.manual_seed(args.seed)
    model = build_model(args.width, args.weights, args.arch)
    result["fp32_eval"] = evaluate(build_model(args.width, args.weights, args.arch), x_te, y_te)
    config = nncf.NNCFConfig.from_dict(copy.deepcopy(config_dict))
    config = register_default_init_args(config, _loader(x_tr, y_tr, args.batch_size, args.seed))
    t0 = time.perf_counter()
    ctrl, cmodel = create_compressed_model(model, config, dump_graphs=False)
    result["create_s"] = time.perf_counter() - t0
    result["init_level"] = _level(ctrl)
    result["init_eval"] = evaluate(cmodel, x_te, y_te)
    try:  # how many filters pruning_init really took out (NNCF rounds kept counts to multiples of 8)
        result["init_filters"] = removed_filters(ctrl, args.arch, args.width, args.weights)
    except Exception as exc:
        result["errors"]["init_filters"] = f"{type(exc).__name__}: {exc}"
    dump()

    t0 = time.perf_counter()
    result["epochs"] = finetune(cmodel, ctrl, x_tr, y_tr, args)
    result["finetune_s"] = time.perf_counter() - t0
    result["final_level"] = _level(ctrl)
    result["final_eval"] = evaluate(cmodel, x_te, y_te)
    try:
        stats = ctrl.statistics()
        result["ctrl_statistics"] = stats.to_str() if hasattr(stats, "to_str") else str(stats)
    except Exception as exc:
        result["errors"]["statistics"] = f"{type(exc).__name__}: {exc}"
    dump()

    try:
        t0 = time.perf_counter()
        ctrl.export_model(args.onnx_out)
        result["export_onnx_s"] = time.perf_counter() - t0
        ov_model = ov.convert_model(args.onnx_out)
        ov.save_model(ov_model, args.ir_out, compress_to_fp16=False)
        result["ir_path"] = args.ir_out
    except Exception as exc:
        result["errors"]["export"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["errors"]["export_traceback"] = traceback.format_exc()
    dump()

    # the torch-side model after strip (ours: physically smaller; NNCF 2.19: masks applied)
    try:
        stripped = ctrl.strip() if hasattr(ctrl, "strip") else None
        if stripped is not None:
            result["stripped_params"] = sum(p.numel() for p in stripped.parameters())
            result["stripped_eval"] = evaluate(stripped, x_te, y_te)
    except Exception as exc:
        result["errors"]["strip"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    result["dense_params"] = sum(
        p.numel() for p in build_model(args.width, args.weights, args.arch).parameters()
    )
    dump()


if __name__ == "__main__":
    main()
