"""``nncompress quantize``: PTQ of ONNX / OpenVINO model files with calibration data from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from nncompress import cli  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc(y)


class _TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 5)
        self.b = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = _Net().eval()
    onnx_path = root / "net.onnx"
    torch.onnx.export(
        net,
        (torch.randn(1, 3, 8, 8),),
        str(onnx_path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}},
        dynamo=False,
    )
    xml_path = root / "net.xml"
    ov.save_model(ov.convert_model(onnx_path), str(xml_path))
    two = root / "two.onnx"
    torch.onnx.export(
        _TwoInputs().eval(),
        (torch.randn(1, 6), torch.randn(1, 4)),
        str(two),
        input_names=["x", "y"],
        dynamo=False,
    )
    return {"onnx": onnx_path, "xml": xml_path, "two": two}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32))
    return path


def _op_types_onnx(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _op_types_ov(path: Path) -> set[str]:
    return {op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()}


def test_quantize_onnx(models, data, tmp_path, capsys) -> None:
    out = tmp_path / "q.onnx"
    assert cli.main(["quantize", str(models["onnx"]), "--data", str(data), "-o", str(out)]) == 0
    assert "QuantizeLinear" in _op_types_onnx(out)
    printed = capsys.readouterr().out
    assert "Quantizers:" in printed and f"Saved {out}" in printed
    assert "6 calibration samples" in printed


def test_quantize_openvino_with_options(models, tmp_path, capsys) -> None:
    data_dir = tmp_path / "samples"
    data_dir.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):  # one sample per file, without the batch axis
        np.save(data_dir / f"{i}.npy", rng.standard_normal((3, 8, 8)).astype(np.float32))
    out = tmp_path / "q.xml"
    argv = ["quantize", str(models["xml"]), "--data", str(data_dir), "-o", str(out)]
    argv += ["--preset", "mixed", "--target-device", "cpu", "--subset-size", "2"]
    assert cli.main(argv) == 0
    assert "FakeQuantize" in _op_types_ov(out)
    printed = capsys.readouterr().out
    assert "2 of 3 calibration samples" in printed and "Quantizers:" in printed


def test_quantize_onnx_to_openvino_quiet(models, data, tmp_path, capsys) -> None:
    out = tmp_path / "q.xml"
    assert cli.main(["quantize", str(models["onnx"]), "--data", str(data), "-o", str(out), "--quiet"]) == 0
    assert "FakeQuantize" in _op_types_ov(out)
    assert capsys.readouterr().out == ""


def test_quantize_npz_multi_input(models, tmp_path) -> None:
    rng = np.random.default_rng(2)
    data = tmp_path / "calib.npz"
    np.savez(data, x=rng.standard_normal((4, 1, 6)).astype(np.float32), y=rng.standard_normal((4, 1, 4)))
    out = tmp_path / "q.onnx"
    assert cli.main(["quantize", str(models["two"]), "--data", str(data), "-o", str(out), "--quiet"]) == 0
    assert "QuantizeLinear" in _op_types_onnx(out)


def test_ignored_scope(models, data, tmp_path, capsys) -> None:
    out = tmp_path / "q.onnx"
    argv = ["quantize", str(models["onnx"]), "--data", str(data), "-o", str(out)]
    assert cli.main([*argv, "--ignored-scope", "{re}/fc/.*"]) == 0
    assert "Not quantized:" in capsys.readouterr().out
    gemm = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "Gemm")
    producers = {o: n.op_type for n in onnx.load(str(out)).graph.node for o in n.output}
    assert all(producers.get(i) != "DequantizeLinear" for i in gemm.input)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad_shape", "does not fit input 'image'"),
        ("missing_data", "no such data file"),
        ("missing_model", "no such model file"),
        ("data_suffix", "unknown data file type '.txt'"),
        ("model_suffix", "unknown model file type '.pt'"),
        ("out_suffix", "unknown output file type '.bin'"),
        ("npz_keys", "no array for input(s) ['y']"),
        ("scope", "nonexistent_node"),
    ],
)
def test_usage_errors(models, data, tmp_path, capsys, case: str, message: str) -> None:
    model, data_arg, out = str(models["onnx"]), str(data), str(tmp_path / "q.onnx")
    extra: list[str] = []
    if case == "bad_shape":
        data_arg = str(tmp_path / "bad.npy")
        np.save(data_arg, np.zeros((4, 5, 8, 8), np.float32))
    elif case == "missing_data":
        data_arg = str(tmp_path / "nope.npy")
    elif case == "missing_model":
        model = str(tmp_path / "nope.onnx")
    elif case == "data_suffix":
        data_arg = str(tmp_path / "calib.txt")
        Path(data_arg).write_text("1 2 3")
    elif case == "model_suffix":
        model = str(tmp_path / "model.pt")
    elif case == "out_suffix":
        out = str(tmp_path / "q.bin")
    elif case == "npz_keys":
        model, data_arg = str(models["two"]), str(tmp_path / "calib.npz")
        np.savez(data_arg, x=np.zeros((2, 1, 6), np.float32))
    elif case == "scope":
        extra = ["--ignored-scope", "nonexistent_node"]
    assert cli.main(["quantize", model, "--data", data_arg, "-o", out, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncompress: error: ") and message in err
    assert "Traceback" not in err
    assert not Path(out).exists()


def test_debug_shows_the_exception(models, tmp_path) -> None:
    from nncompress.cli_commands import UsageError

    with pytest.raises(UsageError):
        cli.main(
            ["--debug", "quantize", str(models["onnx"]), "--data", str(tmp_path / "x.npy"), "-o", "q.onnx"]
        )


def test_failed_quantization_exits_1(models, data, tmp_path, capsys, monkeypatch) -> None:
    import nncompress
    from nncompress.errors import QuantizationError

    def fail(*args, **kwargs):
        raise QuantizationError("statistics collection failed")

    monkeypatch.setattr(nncompress, "quantize", fail)
    out = tmp_path / "q.onnx"
    assert cli.main(["quantize", str(models["onnx"]), "--data", str(data), "-o", str(out)]) == 1
    assert "statistics collection failed" in capsys.readouterr().err
