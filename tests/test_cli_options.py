"""The command line against the issue: every ``quantize`` option on ONNX and OpenVINO IR, a folder of
images with a preprocessing spec as calibration data, ``--quiet`` on every command, exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from nncompress import cli  # noqa: E402
from nncompress.cli_commands import UsageError  # noqa: E402
from nncompress.cli_commands.images import ImagePreprocessing, image_files, load_image_folder  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Linear(8, 8) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / 2.0, dim=-1)
        return self.o(a @ self.v(x))


def _export(model: torch.nn.Module, shape: tuple[int, ...], path: Path, dynamic: bool = False) -> Path:
    torch.onnx.export(
        model.eval(),
        (torch.randn(*shape),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}} if dynamic else None,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    torch.manual_seed(0)
    out = {
        "onnx": _export(_Net(), (1, 3, 8, 8), root / "net.onnx", dynamic=True),
        "nhwc": _export(_Net(channels_last=True), (1, 8, 8, 3), root / "nhwc.onnx"),
        "attn_onnx": _export(_Attention(), (1, 4, 8), root / "attn.onnx"),
    }
    for key, src in (("xml", "onnx"), ("attn_xml", "attn_onnx")):
        out[key] = root / f"{key}.xml"
        ov.save_model(ov.convert_model(out[src]), str(out[key]))
    return out


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(0)
    np.save(root / "image.npy", rng.standard_normal((6, 3, 8, 8)).astype(np.float32))
    np.save(root / "tokens.npy", rng.standard_normal((6, 4, 8)).astype(np.float32))
    return {"image": root / "image.npy", "tokens": root / "tokens.npy"}


def _run(argv: list[str]) -> int:
    return cli.main(["--quiet", *argv])


def _activation_zero_points(path: Path) -> dict[str, int]:
    """Zero point of every QuantizeLinear on an activation, keyed by the tensor it quantizes."""
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        n.input[0]: int(np.ravel(inits[n.input[2]])[0])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and len(n.input) > 2
    }


def _fake_quantizes(path: Path) -> dict[str, tuple[float, float, list[str]]]:
    """Input range and consumers of every FakeQuantize on an activation, keyed by its name."""
    out = {}
    for op in ov.Core().read_model(str(path)).get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        lo, hi = (float(np.ravel(op.input_value(i).get_node().get_data())[0]) for i in (1, 2))
        consumers = [t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs()]
        out[op.get_friendly_name()] = (lo, hi, consumers)
    return out


# ------------------------------------------------------------------------------ quantize options
def test_preset_mixed_makes_activations_asymmetric_on_onnx_and_ir(models, arrays, tmp_path) -> None:
    zps = {}
    for preset in ("performance", "mixed"):
        out = tmp_path / f"{preset}.onnx"
        argv = ["quantize", str(models["onnx"]), "--data", str(arrays["image"]), "-o", str(out)]
        assert _run([*argv, "--preset", preset]) == 0
        zps[preset] = _activation_zero_points(out)
    # the model input (negative and positive values): symmetric (zero point 0) vs asymmetric
    assert zps["performance"]["x"] == 0 and zps["mixed"]["x"] != 0

    ranges = {}
    for preset in ("performance", "mixed"):
        out = tmp_path / f"{preset}.xml"
        argv = ["quantize", str(models["xml"]), "--data", str(arrays["image"]), "-o", str(out)]
        assert _run([*argv, "--preset", preset]) == 0
        ranges[preset] = next(v for k, v in _fake_quantizes(out).items() if k.startswith("x/"))
    lo, hi, _ = ranges["performance"]
    assert lo < 0 < hi and abs(lo + hi) <= 2 * (hi - lo) / 255  # symmetric up to one step
    lo, hi, _ = ranges["mixed"]
    assert abs(lo + hi) > 2 * (hi - lo) / 255


@pytest.mark.parametrize("kind", ["onnx", "xml"])
@pytest.mark.parametrize("device", ["CPU", "gpu", "NPU"])
def test_target_device_reaches_quantize(
    models, arrays, tmp_path, monkeypatch, kind: str, device: str
) -> None:
    import nncompress

    seen = {}
    real = nncompress.quantize

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(nncompress, "quantize", spy)
    out = tmp_path / f"q.{kind}"
    argv = ["quantize", str(models[kind]), "--data", str(arrays["image"]), "-o", str(out)]
    assert _run([*argv, "--target-device", device]) == 0
    assert seen["target_device"] == nncompress.TargetDevice(device.upper())
    assert out.exists()


def test_unknown_target_device_is_a_usage_error(models, arrays, tmp_path, capsys) -> None:
    argv = ["quantize", str(models["onnx"]), "--data", str(arrays["image"]), "-o", str(tmp_path / "q.onnx")]
    assert cli.main([*argv, "--target-device", "TPU"]) == 2
    assert "invalid choice: 'TPU'" in capsys.readouterr().err


def test_ignored_scope_names_and_patterns_on_ir(models, arrays, tmp_path) -> None:
    base = ["quantize", str(models["xml"]), "--data", str(arrays["image"])]
    assert _run([*base, "-o", str(tmp_path / "all.xml")]) == 0
    feeds_fc = lambda path: [k for k, (_, _, c) in _fake_quantizes(path).items() if "/fc/" in " ".join(c)]  # noqa: E731
    assert feeds_fc(tmp_path / "all.xml")  # without a scope, the fc input is quantized
    for scope in (["{re}.*/fc/.*"], ["/fc/Gemm/WithoutBiases"]):
        out = tmp_path / "ignored.xml"
        assert _run([*base, "-o", str(out), "--ignored-scope", *scope]) == 0
        assert not feeds_fc(out), scope
        assert _fake_quantizes(out)  # the rest of the model is still quantized


def test_ignored_scope_several_entries_on_onnx(models, arrays, tmp_path) -> None:
    out = tmp_path / "q.onnx"
    argv = ["quantize", str(models["onnx"]), "--data", str(arrays["image"]), "-o", str(out)]
    # an exact name and a pattern, in one option and in two
    assert _run([*argv, "--ignored-scope", "/fc/Gemm"]) == 0
    nodes = onnx.load(str(out)).graph.node
    producers = {o: n.op_type for n in nodes for o in n.output}
    conv = next(n for n in nodes if n.op_type == "Conv")
    assert any(producers.get(i) == "DequantizeLinear" for i in conv.input)
    for scope in (
        ["--ignored-scope", "/fc/Gemm", "{re}/conv/.*"],
        ["--ignored-scope", "/fc/Gemm", "--ignored-scope", "{re}/conv/.*"],
    ):
        assert _run([*argv, *scope]) == 0
        nodes = onnx.load(str(out)).graph.node
        producers = {o: n.op_type for n in nodes for o in n.output}
        for op_type in ("Gemm", "Conv"):
            node = next(n for n in nodes if n.op_type == op_type)
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), scope
        assert "QuantizeLinear" in producers.values()  # the ReduceMean input is still quantized


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("{re}[", "not a valid regular expression"),
        ("{re}no_such_.*", "no_such_"),
        ("missing_node", "missing_node"),
    ],
)
def test_bad_ignored_scope_exits_2(models, arrays, tmp_path, capsys, scope: str, message: str) -> None:
    out = tmp_path / "q.xml"
    argv = [
        "quantize",
        str(models["xml"]),
        "--data",
        str(arrays["image"]),
        "-o",
        str(out),
        "--ignored-scope",
        scope,
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncompress: error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def _input_quantizer(path: Path) -> tuple[float, ...]:
    """The parameters of the quantizer on the model input ``x``: (scale, zero point) in ONNX,
    (input low, input high) in OpenVINO IR."""
    if path.suffix == ".onnx":
        model = onnx.load(str(path))
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
        return float(inits[q.input[1]]), float(inits[q.input[2]])
    lo, hi, _ = next(v for k, v in _fake_quantizes(path).items() if k.startswith("x/"))
    return lo, hi


@pytest.mark.parametrize("kind", ["attn_onnx", "attn_xml"])
def test_model_type_transformer_runs_smooth_quant_and_mixed_preset(
    models, arrays, tmp_path, capsys, kind
) -> None:
    suffix = ".onnx" if kind == "attn_onnx" else ".xml"
    argv = ["quantize", str(models[kind]), "--data", str(arrays["tokens"])]
    params = {}
    for name, extra in (
        ("plain", []),
        ("mixed", ["--preset", "mixed"]),
        ("transformer", ["--model-type", "transformer"]),
    ):
        out = tmp_path / f"{name}{suffix}"
        assert cli.main([*argv, "-o", str(out), *extra]) == 0
        smooth_quant_ran = "SmoothQuant statistics" in capsys.readouterr().err
        assert smooth_quant_ran == (name == "transformer")
        params[name] = _input_quantizer(out)
    # transformers default to the mixed preset: asymmetric activations
    assert params["transformer"] == pytest.approx(params["mixed"])
    assert params["transformer"] != pytest.approx(params["plain"])


def test_subset_size_limits_the_samples(models, arrays, tmp_path, capsys) -> None:
    out = tmp_path / "q.xml"
    argv = [
        "quantize",
        str(models["onnx"]),
        "--data",
        str(arrays["image"]),
        "-o",
        str(out),
        "--subset-size",
        "4",
    ]
    assert cli.main(argv) == 0
    assert "with 4 of 6 calibration samples" in capsys.readouterr().out
    assert cli.main([*argv[:-1], "0"]) == 2
    assert "--subset-size must be positive" in capsys.readouterr().err


# ------------------------------------------------------------------------------ images
PIL = pytest.importorskip("PIL.Image")


def _image_folder(root: Path, colors: list[tuple[int, int, int]], size=(10, 12), sub: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, color in enumerate(colors):
        folder = root / f"class_{i % 2}" if sub else root
        folder.mkdir(exist_ok=True)
        PIL.new("RGB", size, color).save(folder / f"img_{i}.png")
    return root


def test_image_folder_quantizes_onnx_and_ir(models, tmp_path, capsys) -> None:
    rng = np.random.default_rng(3)
    folder = _image_folder(
        tmp_path / "images", [tuple(int(v) for v in rng.integers(0, 255, 3)) for _ in range(5)]
    )
    out = tmp_path / "q.onnx"
    argv = ["quantize", str(models["onnx"]), "--data", str(folder), "-o", str(out)]
    argv += ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--resize", "crop"]
    assert cli.main(argv) == 0
    assert "with 5 of 5 calibration samples" in capsys.readouterr().out
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}
    out = tmp_path / "q.xml"
    assert (
        _run(["quantize", str(models["xml"]), "--data", str(folder), "-o", str(out), "--subset-size", "3"])
        == 0
    )
    assert _fake_quantizes(out)


def test_image_folder_feeds_an_nhwc_model(models, tmp_path) -> None:
    folder = _image_folder(tmp_path / "images", [(10, 200, 30), (250, 0, 90)], sub=False)
    out = tmp_path / "q.onnx"
    assert _run(["quantize", str(models["nhwc"]), "--data", str(folder), "-o", str(out)]) == 0
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_image_values_follow_the_spec(tmp_path) -> None:
    colors = [(0, 0, 0), (51, 102, 153), (255, 255, 255), (10, 20, 30), (200, 100, 0)]
    folder = _image_folder(tmp_path / "images", colors, sub=False)
    files = image_files(folder)
    spec = ImagePreprocessing(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    n, items = load_image_folder(folder, files, "x", (None, 3, 4, 6), spec, limit=10)
    assert n == 5 and len(items) == 5
    x = items[1]  # img_1: (51, 102, 153)
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    expected = (np.array([51, 102, 153]) / 255 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 1.0])
    np.testing.assert_allclose(x[0, :, 2, 3], expected, rtol=1e-6)

    # BGR, NHWC, pixel scale 1
    spec = ImagePreprocessing(color="BGR", scale=1.0)
    _, items = load_image_folder(folder, files, "x", (1, 5, 7, 3), spec, limit=10)
    assert items[1].shape == (1, 5, 7, 3)
    np.testing.assert_allclose(items[1][0, 0, 0], [153, 102, 51])

    # a subset is spread over the sorted files: the first and the last of five
    _, items = load_image_folder(folder, files, "x", (1, 3, 4, 6), ImagePreprocessing(scale=1.0), limit=2)
    assert [float(i[0, 0, 0, 0]) for i in items] == [0.0, 200.0]


def test_crop_resize_cuts_the_centre(tmp_path) -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :3] = 255  # a white border on the left that a centre crop of 87.5 % (4 px each side) removes
    folder = tmp_path / "imgs"
    folder.mkdir()
    PIL.fromarray(img).save(folder / "a.png")
    files = image_files(folder)
    shape = (1, 3, 56, 56)
    _, (stretched,) = load_image_folder(folder, files, "x", shape, ImagePreprocessing(), 1)
    _, (cropped,) = load_image_folder(folder, files, "x", shape, ImagePreprocessing(resize="crop"), 1)
    assert stretched[0, 0, :, 0].max() > 0.5 and cropped[0, 0, :, 0].max() < 0.05


def test_preprocess_spec_file_and_options_override_it(models, tmp_path, monkeypatch) -> None:
    import nncompress.cli_commands.quantize as qcmd

    folder = _image_folder(tmp_path / "images", [(255, 0, 0), (0, 255, 0)], sub=False)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        json.dumps({"mean": [0.5, 0.5, 0.5], "std": 0.5, "layout": "nchw", "resize": "crop"})
    )
    seen = {}
    real = qcmd.load_image_folder

    def spy(folder, files, name, shape, spec, limit):
        seen["spec"] = spec
        return real(folder, files, name, shape, spec, limit)

    monkeypatch.setattr(qcmd, "load_image_folder", spy)
    out = tmp_path / "q.onnx"
    argv = [
        "quantize",
        str(models["onnx"]),
        "--data",
        str(folder),
        "-o",
        str(out),
        "--preprocess",
        str(spec_path),
    ]
    assert _run([*argv, "--std", "0.25", "--color", "bgr"]) == 0
    assert seen["spec"] == ImagePreprocessing(
        mean=(0.5, 0.5, 0.5), std=(0.25,), layout="NCHW", resize="crop", color="BGR"
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("spec_key", "unknown preprocessing key(s) ['norm']"),
        ("spec_json", "not valid JSON"),
        ("spec_value", "'resize': expected one of ['stretch', 'crop']"),
        ("mean_count", "mean has 2 values; input 'x' has 3 channel(s)"),
        ("bad_number", "--mean: expected comma-separated numbers"),
        ("bad_std", "every std must be positive"),
        ("size_mismatch", "--image-size 9,9 does not fit input 'x'"),
        ("options_without_images", "need --data to be a folder of images"),
        ("mixed_folder", "holds both arrays (.npy/.npz) and images"),
        ("broken_image", "cannot read the image"),
        ("no_pillow", "reading images needs Pillow"),
        ("two_inputs", "images feed a model with one input"),
        ("rank", "images feed inputs of rank 4"),
    ],
)
def test_image_usage_errors(models, arrays, tmp_path, capsys, monkeypatch, case: str, message: str) -> None:
    folder = _image_folder(tmp_path / "images", [(1, 2, 3), (4, 5, 6)])
    model, data, extra = models["onnx"], folder, []
    spec = tmp_path / "spec.json"
    if case == "spec_key":
        spec.write_text('{"norm": 1}')
        extra = ["--preprocess", str(spec)]
    elif case == "spec_json":
        spec.write_text("{mean: 1")
        extra = ["--preprocess", str(spec)]
    elif case == "spec_value":
        spec.write_text('{"resize": "squash"}')
        extra = ["--preprocess", str(spec)]
    elif case == "mean_count":
        extra = ["--mean", "0.1,0.2"]
    elif case == "bad_number":
        extra = ["--mean", "a,b,c"]
    elif case == "bad_std":
        extra = ["--std", "0"]
    elif case == "size_mismatch":
        extra = ["--image-size", "9"]
    elif case == "options_without_images":
        data, extra = arrays["image"], ["--mean", "0.5"]
    elif case == "mixed_folder":
        np.save(folder / "extra.npy", np.zeros((3, 8, 8), np.float32))
    elif case == "broken_image":
        (folder / "broken.jpg").write_bytes(b"not an image")
    elif case == "no_pillow":
        monkeypatch.setitem(sys.modules, "PIL", None)
    elif case == "two_inputs":
        two = tmp_path / "two.onnx"

        class Two(torch.nn.Module):
            def forward(self, a, b):
                return a + b

        torch.onnx.export(Two(), (torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)), str(two), dynamo=False)
        model = two
    elif case == "rank":
        model = models["attn_onnx"]
    out = tmp_path / "q.onnx"
    assert cli.main(["quantize", str(model), "--data", str(data), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncompress: error: ") and message in err, err
    assert "Traceback" not in err and not out.exists()


def test_layout_must_be_given_when_the_model_does_not_say(tmp_path) -> None:
    folder = _image_folder(tmp_path / "images", [(1, 2, 3)])
    with pytest.raises(UsageError, match="give --layout NCHW or NHWC"):
        load_image_folder(folder, image_files(folder), "x", (1, None, None, None), ImagePreprocessing(), 1)
    with pytest.raises(UsageError, match="dynamic height or width: give --image-size"):
        load_image_folder(folder, image_files(folder), "x", (1, 3, None, None), ImagePreprocessing(), 1)
    _, (x,) = load_image_folder(
        folder,
        image_files(folder),
        "x",
        (1, None, None, None),
        ImagePreprocessing(layout="NHWC", size=(4, 5)),
        1,
    )
    assert x.shape == (1, 4, 5, 3)


# ------------------------------------------------------------------------------ quiet, exit codes
def test_help_lists_the_exit_codes(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for line in ("0    success", "1    the work failed", "2    bad usage or input", "130  interrupted"):
        assert line in out


def test_quiet_config_validate_prints_only_failures(tmp_path, capsys) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"input_info": {"sample_size": [1, 3, 8, 8]}}))
    bad.write_text(
        json.dumps({"input_info": {"sample_size": [1, 3, 8, 8]}, "compression": {"algorithm": "nope"}})
    )
    assert cli.main(["config", "validate", "--quiet", str(good)]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["-q", "config", "validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {bad}" in out and str(good) not in out and "valid," not in out
    assert cli.main(["config", "validate", str(tmp_path / "missing.json")]) == 2


def test_quiet_benchmark_prints_only_the_table(models, capsys) -> None:
    argv = ["benchmark", str(models["xml"]), "--seconds", "0.05"]
    assert cli.main(argv) == 0
    assert "Measuring" in capsys.readouterr().err
    assert cli.main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "Measuring" not in captured.err and "median ms" in captured.out


def test_every_command_takes_quiet() -> None:
    parser = cli.build_parser()
    commands = [
        ["config", "validate", "x.json"],
        ["config", "schema"],
        ["quantize", "m.onnx", "--data", "d", "-o", "o.onnx"],
    ]
    commands += [["benchmark", "m.xml"], ["report", "logs"]]
    for argv in commands:
        assert parser.parse_args([*argv, "--quiet"]).quiet is True
        assert parser.parse_args(["--quiet", *argv]).quiet is True
        assert parser.parse_args(argv).quiet is False


def test_unexpected_errors_exit_1_without_traceback(models, arrays, tmp_path, capsys, monkeypatch) -> None:
    import nncompress

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(nncompress, "quantize", broken)
    argv = ["quantize", str(models["onnx"]), "--data", str(arrays["image"]), "-o", str(tmp_path / "q.onnx")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: division by zero (rerun with --debug" in err
    assert "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", *argv])
