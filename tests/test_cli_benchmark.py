"""``nncompress benchmark``: latency, throughput and INT8 share of model files, side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from nncompress import cli  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    fp = root / "fp.xml"
    # dynamic batch axis: the benchmark reshapes it to --batch
    ov_model = ov.convert_model(
        _Net().eval(), example_input=torch.randn(1, 8, 16, 16), input=[(-1, 8, 16, 16)]
    )
    ov.save_model(ov_model, str(fp))
    data = root / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((4, 8, 16, 16)).astype(np.float32))
    q = root / "int8.xml"
    assert cli.main(["quantize", str(fp), "--data", str(data), "-o", str(q), "--quiet"]) == 0
    return {"fp": fp, "int8": q}


def test_benchmark_table(models, capsys) -> None:
    argv = ["benchmark", str(models["fp"]), str(models["int8"]), "--seconds", "0.2", "--batch", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "batch 2" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    assert "median ms" in lines[header] and "samples/s" in lines[header] and "INT8 layers" in lines[header]
    fp_row = next(line for line in lines if line.startswith(str(models["fp"])))
    q_row = next(line for line in lines if line.startswith(str(models["int8"])))
    assert " float " in fp_row and "0/3 (0%)" in fp_row
    assert " INT8 " in q_row
    n8, total = q_row.split()[-2].split("/")
    assert total == "3" and int(n8) > 0


def test_benchmark_warns_when_int8_is_not_faster(models, capsys, monkeypatch) -> None:
    from nncompress.cli_commands import benchmark

    real = benchmark._measure

    def slow_int8(path, args):
        r = real(path, args)
        return benchmark.Result(**{**r.__dict__, "median_ms": r.median_ms + 1000.0}) if r.quantized else r

    monkeypatch.setattr(benchmark, "_measure", slow_int8)
    assert cli.main(["benchmark", str(models["fp"]), str(models["int8"]), "--seconds", "0.05", "--f32"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "not faster than" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.xml"], "no such model file"),
        (["model.pt"], "unknown model file type"),
        (["{fp}", "--batch", "0"], "--batch must be positive"),
    ],
)
def test_benchmark_usage_errors(models, capsys, argv, message) -> None:
    argv = [a.format(fp=models["fp"]) for a in argv]
    assert cli.main(["benchmark", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncompress: error: ") and message in err
