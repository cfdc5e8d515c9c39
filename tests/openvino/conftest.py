"""The OpenVINO backend tests share the torch test models of the ONNX backend tests."""

from __future__ import annotations

import sys
from pathlib import Path

_ONNX_TESTS = str(Path(__file__).resolve().parent.parent / "onnx")
if _ONNX_TESTS not in sys.path:
    sys.path.insert(0, _ONNX_TESTS)  # for `import backend_models`
