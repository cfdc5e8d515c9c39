"""`import nncompress` must stay cheap: no framework is imported until a backend is used."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_loads_no_framework():
    mods = _modules_after("import nncompress")
    for heavy in ("torch", "onnx", "onnxruntime", "openvino", "tensorflow", "jsonschema"):
        assert heavy not in mods, f"`import nncompress` imported {heavy}"


def test_config_and_core_load_no_framework():
    mods = _modules_after(
        "import nncompress\n"
        "nncompress.NNCFConfig\n"
        "import nncompress.graph, nncompress.quantization.spec, nncompress.scopes, nncompress.data\n"
    )
    for heavy in ("torch", "onnx", "onnxruntime", "openvino", "tensorflow"):
        assert heavy not in mods, f"the core imported {heavy}"


def test_unknown_attribute_is_a_clear_error():
    import nncompress

    try:
        nncompress.quantise  # noqa: B018
    except AttributeError as exc:
        assert "quantise" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_every_public_name_resolves():
    import nncompress

    assert set(nncompress.__all__) == set(nncompress._LAZY) | {"__version__"}
    for name in ("NNCFConfig", "Dataset", "IgnoredScope", "TargetDevice", "QuantizationPreset", "ModelType"):
        assert getattr(nncompress, name).__name__ == name
