"""Run every benchmark (what ``make bench`` runs).

    .venv/bin/python benchmarks/run_all.py            # full runs
    .venv/bin/python benchmarks/run_all.py --quick    # fewer images and iterations
    .venv/bin/python benchmarks/run_all.py --only nncf

Each benchmark is a script in this folder that accepts ``--quick`` and ``--only ours|nncf``; it runs
in its own process with this interpreter, prints its table and writes its JSON under
``benchmarks/.cache/results/``. The exit status is non-zero when any benchmark failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

#: every benchmark script, in the order they run
BENCHMARKS = [
    "ptq_torch.py",
    "ptq_onnx_openvino.py",
    "qat_torch.py",
    "pruning_torch.py",
    "pruning_keras.py",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", choices=["ours", "nncf"], help="pass --only to every benchmark")
    parser.add_argument("--select", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    scripts = BENCHMARKS
    if args.select:
        wanted = {
            s.strip() if s.strip().endswith(".py") else s.strip() + ".py" for s in args.select.split(",")
        }
        scripts = [s for s in BENCHMARKS if s in wanted]
    extra = (["--quick"] if args.quick else []) + (["--only", args.only] if args.only else [])
    status = {}
    for script in scripts:
        print(f"=== {script} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(BENCH_DIR / script), *extra])
        status[script] = (rc, time.perf_counter() - t0)
        print(flush=True)
    print("=== summary")
    for script, (rc, secs) in status.items():
        print(f"{script:<24} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {secs:7.1f} s")
    return 0 if all(rc == 0 for rc, _ in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
