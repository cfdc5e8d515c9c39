"""End-to-end demo of nncompress, one step per function; run from the repository root:

    .venv/bin/python examples/demo.py

Step 1 loads and validates an NNCF config, prints the effective value of every parameter of each
algorithm (set in the file, or the schema default), and shows that a misspelled config is rejected
with the path of each mistake. Step 2 runs post-training quantization of a CNN trained on
scikit-learn's digits and of EfficientNet-Lite0 with real ImageNet weights, exports both to
OpenVINO IR and measures accuracy, size and latency of FP32 against INT8. Step 3 runs
quantization-aware training where PTQ lost more accuracy than a threshold: low-bit DigitsCNN
(NNCF 2.x's ``create_compressed_model``), and EfficientNet-Lite0's PTQ model fine-tuned with
distillation from the float model (NNCF 3.x's way). Step 4 prunes filters of a ResNet-style CNN while it learns INT8 quantizers (one config), exports a
pruned INT8 IR with the channels really removed, and compares accuracy, size and latency with
FP32 and PTQ INT8. Step 5 lets accuracy-aware training find the highest pruning level within
1% accuracy. Step 6 writes summary, latency and quantizer-range JSON files and an HTML report
with PNG plots. Everything it writes goes to ``runs/demo/``.
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


def step_2_post_training_quantization() -> dict[str, Any]:
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
    held_out = imagenet_sample_crops(64, seed=1)
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
    latency = []
    for r in rows:  # one latency column for the table
        r["latency ms"] = r.pop("latency ms (b=64)", None) or r.pop("latency ms (b=1)")
        r["INT8 layers"] = r.pop("INT8 layers")
        latency.append(
            {
                "name": f"{r['model']} {r['precision']}",
                "median_ms": float(r["latency ms"]),
                "precision": r["precision"],
                "group": r["model"],  # speed-ups against the same model's FP32
            }
        )
    print()
    print_table(rows)
    print(
        "\nDigits: accuracy on the 450 test images; latency at batch 64. EfficientNet-Lite0 (*): top-1 "
        "agreement with FP32 torch on 64 held-out crops; latency at batch 1.\n"
        f"FP32 runs with the f32 precision hint (OpenVINO would use bf16 here). IRs are in {RUN_DIR}."
    )
    effnet_agreement = float(
        next(r for r in rows if r["precision"] == "INT8" and r["model"] != "DigitsCNN")["torch acc"][:-1]
    )
    return {
        "rows": rows,
        "latency": latency,
        "effnet": effnet,
        "effnet_int8": q_effnet,
        "effnet_ptq_agreement": effnet_agreement,
    }


def step_3_quantization_aware_training(
    effnet: Any, effnet_int8: Any, effnet_ptq_agreement: float, max_drop: float = 0.005
) -> dict[str, Any]:
    """PTQ first; quantization-aware training only where PTQ lost more than ``max_drop``.

    8-bit DigitsCNN loses nothing, so QAT is skipped. With 4- and 3-bit weights and 4-bit
    activations (a TRIAL device, which allows any bit width) PTQ loses accuracy, and a short QAT in
    the user's own training loop, through NNCF 2.x's ``create_compressed_model``, wins it back.
    EfficientNet-Lite0's INT8 model from step 2 is fine-tuned directly (NNCF 3.x's way).
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
    rows.append(effnet_qat_with_distillation(effnet, effnet_int8, effnet_ptq_agreement, max_drop))
    return {"rows": rows}


def effnet_qat_with_distillation(
    effnet: Any, ptq_model: Any, ptq_agreement: float, max_drop: float, steps: int = 24
) -> dict[str, Any]:
    """EfficientNet-Lite0 lost top-1 agreement in PTQ: fine-tuning the PTQ model wins it back.

    The model ``nncompress.quantize`` returned is an ordinary trainable ``nn.Module`` (NNCF 3.x's
    QAT workflow): its weights and quantizer ranges train in the user's loop. There are no
    ImageNet labels here, so the loss is distillation from the float model (softened logits,
    temperature 2). BatchNorm statistics and dropout stay frozen (few images); ``steps`` Adam
    steps of 16 crops.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    sys.path.insert(0, str(REPO / "examples"))
    from data import imagenet_sample_crops

    row = {"bits W/A": "8/8 EfficientNet-Lite0", "FP32 acc": "1.000*", "PTQ acc": f"{ptq_agreement:.3f}*"}
    if 1.0 - ptq_agreement <= max_drop:
        row.update({"QAT acc": "-", "decision": "keep PTQ"})
        return row
    train_crops = imagenet_sample_crops(16 * steps, seed=2)
    held_out = imagenet_sample_crops(64, seed=1)  # the held-out crops of step 2
    with torch.no_grad():
        reference = effnet(held_out).argmax(1)
        teacher_logits = torch.cat([effnet(x) for x in train_crops.split(32)])
    student = copy.deepcopy(ptq_model).eval()  # eval: frozen BatchNorm and dropout; all else trains
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-5)
    temperature = 2.0
    t0 = time.perf_counter()
    for x, t in tqdm(
        zip(train_crops.split(16), teacher_logits.split(16)),
        total=steps,
        desc="EfficientNet QAT",
        leave=False,
    ):
        optimizer.zero_grad()
        log_p = F.log_softmax(student(x) / temperature, dim=1)
        loss = F.kl_div(log_p, F.softmax(t / temperature, dim=1), reduction="batchmean") * temperature**2
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        agreement = float((student(held_out).argmax(1) == reference).float().mean())
    seconds = time.perf_counter() - t0
    row.update(
        {
            "QAT acc": f"{agreement:.3f}*",
            "decision": f"drop {100 * (1 - ptq_agreement):.1f}% > {100 * max_drop:.1f}%: QAT of the PTQ model "
            f"with distillation, {steps} steps ({seconds:.1f} s)",
        }
    )
    print_table([row])
    print("EfficientNet-Lite0 (*): top-1 agreement with FP32 on 64 held-out crops of the sample photos.")
    return row


def train_epochs(model, ctrl, loader, epochs: int, lr: float, label: str) -> float:
    """The user's own training loop: NNCF 2.x adds only ``ctrl.loss()`` and the scheduler calls.

    Returns the seconds it took; a progress bar shows the batches.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        ctrl.scheduler.epoch_step()
        model.train()
        for x, y in tqdm(loader, desc=f"{label} epoch {epoch + 1}/{epochs}", leave=False):
            ctrl.scheduler.step()
            optimizer.zero_grad()
            (F.cross_entropy(model(x), y) + ctrl.loss()).backward()
            optimizer.step()
    return time.perf_counter() - t0


def step_4_filter_pruning(width: int = 64, batch: int = 256) -> dict[str, Any]:
    """Filter pruning and quantization-aware training in one config, exported as a pruned INT8 IR.

    A ResNet-style digits CNN (``width`` channels in the first stage) is pruned to half its
    filters (NNCF 2.x's ``filter_pruning``) while it learns INT8 quantizers (``quantization``),
    in the user's own loop. ``ctrl.export_model`` writes an IR with the channels really removed
    and FakeQuantize ops. FP32, INT8 (PTQ) and pruned INT8 are compared in OpenVINO at ``batch``.
    """
    import torch

    import nncompress
    from nncompress.torch import create_compressed_model, register_default_init_args
    from nncompress.torch.export import export

    sys.path.insert(0, str(REPO / "examples"))
    from data import digits_loaders, evaluate, train_digits_model
    from models import DigitsResNet

    heading("Step 4: filter pruning + quantization-aware training, channels really removed")
    torch.manual_seed(0)
    train, test = digits_loaders(batch_size=64)
    dense = train_digits_model(DigitsResNet(width=width), epochs=5, train_loader=train)
    config = nncompress.NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "compression": [
                {
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
                {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
            ],
        }
    )
    register_default_init_args(config, train)
    ctrl, compressed = create_compressed_model(copy.deepcopy(dense), config, dump_graphs=False)
    print(next(c for c in ctrl.child_ctrls if hasattr(c, "describe_groups")).describe_groups())
    seconds = train_epochs(compressed, ctrl, train, epochs=3, lr=1e-3, label="prune+QAT")
    print(f"Pruning + QAT: 3 epochs in {seconds:.1f} s")
    print(ctrl.statistics().filter_pruning.to_str())
    pruned_int8_xml = ctrl.export_model(RUN_DIR / "resnet_pruned_int8.xml")
    compressed_acc = evaluate(compressed, test)

    dense_int8 = nncompress.quantize(dense, nncompress.Dataset(train, lambda b: b[0]), subset_size=300)
    x_test = torch.cat([x for x, _ in test])
    y_test = torch.cat([y for _, y in test]).numpy()
    example = (
        x_test[:batch] if len(x_test) >= batch else x_test.repeat(batch // len(x_test) + 1, 1, 1, 1)[:batch]
    )
    from nncompress.torch.export import run_openvino

    rows, latency = [], []
    fp32_latency = None
    for label, model, f32 in (
        ("dense FP32", dense, True),
        ("dense INT8 (PTQ)", dense_int8, False),
        ("pruned INT8 (QAT)", None, False),
    ):
        if model is None:
            xml, params, acc = pruned_int8_xml, ctrl.strip(do_copy=True), compressed_acc
            params = sum(p.numel() for p in params.parameters())
        else:
            xml = export(
                model, RUN_DIR / f"resnet_{label.split()[0]}_{label.split()[1].lower()}.xml", x_test[:1]
            )
            params = sum(p.numel() for n, p in model.named_parameters() if "_nncf" not in n)
            acc = evaluate(model, test)
        ir_acc = float(np.mean(run_openvino(xml, [x_test.numpy()], f32=f32)[0].argmax(1) == y_test))
        ms = latency_ms(xml, example.numpy(), f32=f32)
        fp32_latency = fp32_latency or ms
        latency.append(
            {
                "name": f"ResNet {label}",
                "median_ms": ms,
                "precision": "FP32" if f32 else "INT8",
                "group": "ResNet",
            }
        )
        rows.append(
            {
                "model": label,
                "torch acc": f"{acc:.3f}",
                "IR acc": f"{ir_acc:.3f}",
                "params": params,
                "IR KiB": f"{ir_size_kib(xml):.0f}",
                f"latency ms (b={batch})": f"{ms:.2f}",
                "speed-up": f"{fp32_latency / ms:.2f}x",
            }
        )
    print_table(rows)
    print("Digits test accuracy (450 images); FP32 with the f32 hint, INT8 with OpenVINO's defaults.")
    return {"rows": rows, "latency": latency, "quantized": compressed}


def step_5_accuracy_aware_pruning(width: int = 32, max_drop: float = 0.01) -> dict[str, Any]:
    """Accuracy-aware training: the highest pruning level within ``max_drop`` of the dense model.

    NNCF 2.x's ``adaptive_compression_level`` mode trains, validates, and moves the pruning level
    up or down (a bisection) until the step gets small; it returns the best model it kept and
    writes per-epoch statistics, checkpoints and a plot into ``log_dir``.
    """
    import torch

    import nncompress
    from nncompress.common.accuracy_aware_training import create_accuracy_aware_training_loop
    from nncompress.torch import create_compressed_model, register_default_init_args

    sys.path.insert(0, str(REPO / "examples"))
    from data import digits_loaders, evaluate, train_digits_model
    from models import DigitsResNet

    heading("Step 5: accuracy-aware training finds the pruning level")
    torch.manual_seed(0)
    train, test = digits_loaders(batch_size=64)
    dense = train_digits_model(DigitsResNet(width=width), epochs=5, train_loader=train)
    dense_acc = evaluate(dense, test)
    config = nncompress.NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 8, 8]},
            "log_dir": str(RUN_DIR / "accuracy_aware"),
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": 0.3,
                "params": {"schedule": "baseline", "pruning_target": 0.3, "prune_downsample_convs": True},
                "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 256}},
            },
            "accuracy_aware_training": {
                "mode": "adaptive_compression_level",
                "params": {
                    "maximal_absolute_accuracy_degradation": max_drop,
                    "initial_training_phase_epochs": 1,
                    "patience_epochs": 1,
                    "minimal_compression_rate_step": 0.05,
                    "maximal_total_epochs": 10,
                },
            },
        }
    )
    register_default_init_args(config, train)
    ctrl, model = create_compressed_model(copy.deepcopy(dense), config, dump_graphs=False)
    import torch.nn.functional as F

    def train_epoch_fn(compression_ctrl, model, epoch, optimizer, lr_scheduler):
        model.train()
        for x, y in train:
            compression_ctrl.scheduler.step()
            optimizer.zero_grad()
            (F.cross_entropy(model(x), y) + compression_ctrl.loss()).backward()
            optimizer.step()

    def configure_optimizers_fn():
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)

    t0 = time.perf_counter()
    loop = create_accuracy_aware_training_loop(config, ctrl, dense_acc)
    model = loop.run(model, train_epoch_fn, lambda m, epoch: evaluate(m, test), configure_optimizers_fn)
    print(loop.statistics.to_str())
    print(f"Accuracy-aware training: {time.perf_counter() - t0:.1f} s; log in {loop.runner.log_dir}")
    return {"statistics": loop.statistics, "log_dir": loop.runner.log_dir}


def step_6_report(results: dict[str, Any]) -> Path:
    """Summary, latency and quantizer ranges as JSON, and one HTML report with PNG plots."""
    import json

    from nncompress.report import write_report
    from nncompress.torch.report import quantizer_ranges

    heading("Step 6: report")
    latency = results["ptq"]["latency"] + results["pruning"]["latency"]
    (RUN_DIR / "latency.json").write_text(json.dumps({"unit": "ms", "device": "CPU", "models": latency}))
    ranges = quantizer_ranges(results["pruning"]["quantized"], "ResNet pruned INT8 (QAT)")
    (RUN_DIR / "quantizer_ranges.json").write_text(json.dumps(ranges))
    summary: dict[str, Any] = {"title": "nncompress demo: PTQ, QAT, pruning + QAT, accuracy-aware training"}
    for step in ("ptq", "qat", "pruning"):
        for row in results[step]["rows"]:
            summary[
                f"{step}: {row.get('model') or row.get('bits W/A')} {row.get('precision', '')}".strip()
            ] = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("model", "precision"))
    (RUN_DIR / "summary.json").write_text(json.dumps(summary, indent=1))
    report = write_report(RUN_DIR)
    print(f"Report: {report} (open it in a browser; plots are embedded)")
    return report


def timed(step: Any, *args: Any) -> Any:
    """Run one step and say how long it took."""
    t0 = time.perf_counter()
    result = step(*args)
    print(f"({step.__name__} took {time.perf_counter() - t0:.0f} s)")
    return result


def main() -> None:
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    timed(step_1_config)
    results["ptq"] = timed(step_2_post_training_quantization)
    ptq = results["ptq"]
    results["qat"] = timed(
        step_3_quantization_aware_training, ptq["effnet"], ptq["effnet_int8"], ptq["effnet_ptq_agreement"]
    )
    results["pruning"] = timed(step_4_filter_pruning)
    results["accuracy_aware"] = timed(step_5_accuracy_aware_pruning)
    timed(step_6_report, results)
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
