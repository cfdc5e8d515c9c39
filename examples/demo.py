"""End-to-end demo of nncompress, one step per function; run from the repository root:

    .venv/bin/python examples/demo.py

Step 1 loads and validates an NNCF config, prints the effective value of every parameter of each
algorithm (set in the file, or the schema default), and shows that a misspelled config is rejected
with the path of each mistake. Step 2 runs post-training quantization of a CNN trained on
scikit-learn's digits and of EfficientNet-Lite0 with real ImageNet weights, exports both to
OpenVINO IR and measures accuracy, size and latency of FP32 against INT8. Step 3 runs
quantization-aware training (NNCF 2.x's ``create_compressed_model``) where PTQ lost more accuracy
than a threshold. Step 4 prunes filters of a ResNet-style CNN (channels really removed), then
quantizes it, and compares size and latency. Everything it writes goes to ``runs/demo/``.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nncompress import NNCFConfig
from nncompress.config import effective_params
from nncompress.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# NNCF's example configs live in the shared folder beside the checkout, when it is present.
SHARED_CONFIGS = REPO.parent / "shared" / "data" / "nncf-configs"
DEMO_CONFIG = "torch_classification_resnet34_imagenet_pruning_geometric_median_kd.json"

# Used when the shared folder is absent: the same kind of config, inline.
BUILTIN_CONFIG: dict[str, Any] = {
    "model": "resnet34",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "compression": [
        {
            "algorithm": "filter_pruning",
            "pruning_init": 0.1,
            "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 20},
        },
        {"algorithm": "knowledge_distillation", "type": "softmax"},
    ],
}


def heading(title: str) -> None:
    print(f"\n=== {title} ===")


def load_demo_config() -> tuple[NNCFConfig, str]:
    """The demo config and where it came from."""
    path = SHARED_CONFIGS / DEMO_CONFIG
    if path.is_file():
        return NNCFConfig.from_json(path), str(path.relative_to(REPO.parent))
    return NNCFConfig.from_dict(BUILTIN_CONFIG), "built-in example (shared configs not found)"


def print_effective_values(config: NNCFConfig) -> None:
    """A table per algorithm: parameter, effective value, and whether it is the schema default."""
    for section in config.algorithm_sections():
        name = section["algorithm"]
        rows = [p for p in effective_params(section) if p.value is not None]
        width = max(len(p.path) for p in rows) if rows else 10
        print(
            f"\n[{name}]  ({sum(not p.is_default for p in rows)} set in the file, "
            f"{sum(p.is_default for p in rows)} from schema defaults)"
        )
        print(f"  {'parameter':<{width}}  {'value':<24} source")
        for p in rows:
            source = "default" if p.is_default else "config"
            print(f"  {p.path:<{width}}  {p.value!s:<24} {source}")


def misspelled_copy(config: NNCFConfig) -> dict[str, Any]:
    """The config with typical mistakes: a misspelled top-level key, parameter and value."""
    broken = copy.deepcopy(dict(config))
    broken["target_devise"] = "CPU"
    section = broken["compression"][0] if isinstance(broken["compression"], list) else broken["compression"]
    params = section.setdefault("params", {})
    params["pruning_targt"] = params.pop("pruning_target", 0.5)
    params["schedule"] = "exponental"
    return broken


def step_1_config() -> NNCFConfig:
    """Load and validate a config, show effective values, show a rejected config."""
    heading("Step 1: configuration")
    config, source = load_demo_config()
    names = ", ".join(s["algorithm"] for s in config.algorithm_sections())
    print(f"Loaded {source}: valid; algorithms: {names}")
    print(f"Model inputs: {config.input_infos()}")
    print_effective_values(config)

    print("\nThe same config with three typos is rejected, every problem with its path:")
    try:
        NNCFConfig.from_dict(misspelled_copy(config))
    except ConfigError as e:
        print(e)
    else:  # pragma: no cover - would mean validation is broken
        raise SystemExit("a misspelled config was accepted")
    return config


RUN_DIR = REPO / "runs" / "demo"


def latency_ms(path: Path, example: np.ndarray, f32: bool, seconds: float = 1.5) -> float:
    """Median latency of one synchronous inference (after warm-up) of the IR at ``path``."""
    from nncompress.torch.export import compile_openvino

    compiled = compile_openvino(path, f32=f32)
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer([example])
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 10:
        t0 = time.perf_counter()
        request.infer([example])
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def ir_size_kib(xml: Path) -> float:
    return (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1024


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))


def step_2_post_training_quantization() -> list[dict[str, Any]]:
    """PTQ of two models with ``nncompress.quantize``; FP32 vs INT8 in OpenVINO on this CPU."""
    import openvino as ov
    import torch

    import nncompress
    from nncompress.torch.export import compile_openvino, export, int8_summary, run_openvino

    sys.path.insert(0, str(REPO / "examples"))
    from data import digits_loaders, evaluate, imagenet_sample_crops, train_digits_model
    from models import DigitsCNN, load_efficientnet_lite0

    heading("Step 2: post-training quantization")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rows = []

    # a CNN trained on digits: accuracy on the 450 test images
    train, test = digits_loaders(batch_size=64)
    model = train_digits_model(DigitsCNN(), epochs=10)
    x_test = torch.cat([x for x, _ in test])
    y_test = torch.cat([y for _, y in test]).numpy()
    t0 = time.perf_counter()
    quantized = nncompress.quantize(model, nncompress.Dataset(train, lambda b: b[0]), subset_size=300)
    print(f"DigitsCNN quantized in {time.perf_counter() - t0:.1f} s")
    for label, m in (("FP32", model), ("INT8", quantized)):
        xml = export(m, RUN_DIR / f"digits_{label.lower()}.xml", x_test[:1])
        f32 = label == "FP32"
        ir_acc = float(np.mean(run_openvino(xml, [x_test.numpy()], f32=f32)[0].argmax(1) == y_test))
        int8 = int8_summary(compile_openvino(xml, f32=False))
        rows.append(
            {
                "model": "DigitsCNN",
                "precision": label,
                "torch acc": f"{evaluate(m, test):.3f}",
                "IR acc": f"{ir_acc:.3f}",
                "IR KiB": f"{ir_size_kib(xml):.0f}",
                "latency ms (b=64)": f"{latency_ms(xml, x_test[:64].numpy(), f32=f32):.3f}",
                "INT8 layers": f"{int8.int8}/{int8.total}",
            }
        )

    # EfficientNet-Lite0 with real ImageNet weights: agreement with FP32 on sample-photo crops
    effnet = load_efficientnet_lite0(pretrained=True).eval()
    calibration = imagenet_sample_crops(64, seed=0)
    held_out = imagenet_sample_crops(32, seed=1)
    t0 = time.perf_counter()
    q_effnet = nncompress.quantize(effnet, nncompress.Dataset(list(calibration.split(1))), subset_size=64)
    print(f"EfficientNet-Lite0 quantized in {time.perf_counter() - t0:.1f} s")
    with torch.no_grad():
        reference = effnet(held_out).argmax(1).numpy()
    for label, m in (("FP32", effnet), ("INT8", q_effnet)):
        xml = export(m, RUN_DIR / f"effnet_{label.lower()}.xml", held_out[:1])
        f32 = label == "FP32"
        with torch.no_grad():
            torch_top1 = float(np.mean(m(held_out).argmax(1).numpy() == reference))
        ir_top1 = float(np.mean(run_openvino(xml, [held_out.numpy()], f32=f32)[0].argmax(1) == reference))
        int8 = int8_summary(compile_openvino(ov.Core().read_model(xml), f32=False))
        rows.append(
            {
                "model": "EfficientNet-Lite0",
                "precision": label,
                "torch acc": f"{torch_top1:.3f}*",
                "IR acc": f"{ir_top1:.3f}*",
                "IR KiB": f"{ir_size_kib(xml):.0f}",
                "latency ms (b=1)": f"{latency_ms(xml, held_out[:1].numpy(), f32=f32):.3f}",
                "INT8 layers": f"{int8.int8}/{int8.total}",
            }
        )
    for r in rows:  # one latency column for the table
        r["latency ms"] = r.pop("latency ms (b=64)", None) or r.pop("latency ms (b=1)")
        r["INT8 layers"] = r.pop("INT8 layers")
    print()
    print_table(rows)
    print(
        "\nDigits: accuracy on the 450 test images; latency at batch 64. EfficientNet-Lite0 (*): top-1 "
        "agreement with FP32 torch on 32 held-out crops; latency at batch 1.\n"
        f"FP32 runs with the f32 precision hint (OpenVINO would use bf16 here). IRs are in {RUN_DIR}."
    )
    return rows


def step_3_quantization_aware_training(max_drop: float = 0.005) -> list[dict[str, Any]]:
    """PTQ first; quantization-aware training only where PTQ lost more than ``max_drop``.

    8-bit DigitsCNN loses nothing, so QAT is skipped. With 4- and 3-bit weights and 4-bit
    activations (a TRIAL device, which allows any bit width) PTQ loses accuracy, and a short QAT in
    the user's own training loop, through NNCF 2.x's ``create_compressed_model``, wins it back.
    """
    import torch
    import torch.nn.functional as F

    import nncompress
    from nncompress.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )
    from nncompress.torch import create_compressed_model, register_default_init_args

    sys.path.insert(0, str(REPO / "examples"))
    from data import digits_loaders, evaluate, train_digits_model
    from models import DigitsCNN

    heading("Step 3: quantization-aware training where PTQ lost accuracy")
    torch.manual_seed(0)
    train, test = digits_loaders(batch_size=64)
    model = train_digits_model(DigitsCNN(), epochs=10)
    fp32 = evaluate(model, test)
    rows = []
    for bits, act_bits in ((8, 8), (4, 4), (3, 4)):
        device = "ANY" if bits == act_bits == 8 else "TRIAL"
        ptq = nncompress.quantize(
            model,
            nncompress.Dataset(train, lambda b: b[0]),
            target_device=device,
            subset_size=300,
            advanced_parameters=AdvancedQuantizationParameters(
                weights_quantization_params=QuantizationParameters(num_bits=bits),
                activations_quantization_params=QuantizationParameters(num_bits=act_bits),
                show_progress=False,
            ),
        )
        ptq_acc = evaluate(ptq, test)
        drop = f"drop {100 * (fp32 - ptq_acc):.1f}%"
        row = {"bits W/A": f"{bits}/{act_bits}", "FP32 acc": f"{fp32:.3f}", "PTQ acc": f"{ptq_acc:.3f}"}
        if fp32 - ptq_acc <= max_drop:
            row.update({"QAT acc": "-", "decision": f"{drop} <= {100 * max_drop:.1f}%: keep PTQ"})
            rows.append(row)
            continue
        config = nncompress.NNCFConfig.from_dict(
            {
                "input_info": {"sample_size": [1, 1, 8, 8]},
                "target_device": device,
                "compression": {
                    "algorithm": "quantization",
                    "weights": {"bits": bits, "mode": "symmetric", "per_channel": True},
                    "activations": {"bits": act_bits},
                    "initializer": {"range": {"num_init_samples": 300}},
                },
            }
        )
        register_default_init_args(config, train)
        ctrl, qat_model = create_compressed_model(copy.deepcopy(model), config, dump_graphs=False)
        optimizer = torch.optim.Adam(qat_model.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        for _epoch in range(3):  # the user's own loop: only ctrl.loss() and the scheduler are added
            ctrl.scheduler.epoch_step()
            qat_model.train()
            for x, y in train:
                ctrl.scheduler.step()
                optimizer.zero_grad()
                loss = F.cross_entropy(qat_model(x), y) + ctrl.loss()
                loss.backward()
                optimizer.step()
        qat_acc = evaluate(qat_model, test)
        seconds = time.perf_counter() - t0
        row.update(
            {
                "QAT acc": f"{qat_acc:.3f}",
                "decision": f"{drop} > {100 * max_drop:.1f}%: QAT, 3 epochs ({seconds:.1f} s)",
            }
        )
        rows.append(row)
    print_table(rows)
    print(
        "Accuracy on the 450 digits test images; TRIAL allows bit widths below 8 (runs as fake quantization)."
    )
    return rows


def step_4_filter_pruning(width: int = 64, batch: int = 256) -> list[dict[str, Any]]:
    """Filter pruning that removes channels, fine-tuned in the user's loop, then INT8 PTQ.

    A ResNet-style digits CNN (``width`` channels in the first stage) is pruned to half its
    filters with NNCF 2.x's ``filter_pruning`` config; ``ctrl.strip()`` returns a physically
    smaller model, which is then quantized. Latency is measured in OpenVINO at ``batch``.
    """
    import torch
    import torch.nn.functional as F

    import nncompress
    from nncompress.torch import create_compressed_model, register_default_init_args
    from nncompress.torch.export import export

    sys.path.insert(0, str(REPO / "examples"))
    from data import digits_loaders, evaluate, train_digits_model
    from models import DigitsResNet

    heading("Step 4: filter pruning (channels really removed), then INT8")
    torch.manual_seed(0)
    train, test = digits_loaders(batch_size=64)
    dense = train_digits_model(DigitsResNet(width=width), epochs=5, train_loader=train)
    config = nncompress.NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": 0.25,
                "params": {
                    "schedule": "exponential",
                    "pruning_target": 0.5,
                    "pruning_steps": 2,
                    "prune_downsample_convs": True,
                },
                "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
            },
        }
    )
    register_default_init_args(config, train)
    ctrl, pruned = create_compressed_model(copy.deepcopy(dense), config, dump_graphs=False)
    print(ctrl.describe_groups())
    optimizer = torch.optim.Adam(pruned.parameters(), lr=1e-3)
    for _epoch in range(3):
        ctrl.scheduler.epoch_step()
        pruned.train()
        for x, y in train:
            ctrl.scheduler.step()
            optimizer.zero_grad()
            (F.cross_entropy(pruned(x), y) + ctrl.loss()).backward()
            optimizer.step()
    stripped = ctrl.strip()
    calibration = nncompress.Dataset(train, lambda b: b[0])
    dense_int8 = nncompress.quantize(dense, calibration, subset_size=300)
    pruned_int8 = nncompress.quantize(stripped, calibration, subset_size=300)
    x_test = torch.cat([x for x, _ in test])
    example = (
        x_test[:batch] if len(x_test) >= batch else x_test.repeat(batch // len(x_test) + 1, 1, 1, 1)[:batch]
    )
    rows = []
    fp32_latency = None
    for label, model, f32 in (
        ("dense FP32", dense, True),
        ("dense INT8", dense_int8, False),
        ("pruned FP32", stripped, True),
        ("pruned INT8", pruned_int8, False),
    ):
        xml = export(model, RUN_DIR / f"resnet_{label.replace(' ', '_').lower()}.xml", x_test[:1])
        ms = latency_ms(xml, example.numpy(), f32=f32)
        fp32_latency = fp32_latency or ms
        rows.append(
            {
                "model": label,
                "acc": f"{evaluate(model, test):.3f}",
                "params": sum(p.numel() for n, p in model.named_parameters() if "_nncf" not in n),
                "IR KiB": f"{ir_size_kib(xml):.0f}",
                f"latency ms (b={batch})": f"{ms:.2f}",
                "speed-up": f"{fp32_latency / ms:.2f}x",
            }
        )
    print(ctrl.statistics().to_str())
    print_table(rows)
    print("Digits test accuracy (450 images); FP32 with the f32 hint, INT8 with OpenVINO's defaults.")
    return rows


def main() -> None:
    step_1_config()
    step_2_post_training_quantization()
    step_3_quantization_aware_training()
    step_4_filter_pruning()


if __name__ == "__main__":
    main()
