"""Bring a device run's results into this checkout: the sections bench/device/run.sh wrote to its
BENCHMARKS.md, and their plots.

    python -m bench.device.collect <files_at>     # the folder the run tool put $OUT's files in
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench.report import copy_sections, plot_path

SECTIONS = ["train-speed-cuda", "serving-gpu"]
PLOTS = ["train_speed-cuda.png", "serving-gpu.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files_at", type=Path, help="where the run's $OUT landed")
    args = parser.parse_args()
    copied = copy_sections(args.files_at / "BENCHMARKS.md", SECTIONS)
    for name in PLOTS:
        if (args.files_at / "plots" / name).exists():
            shutil.copyfile(args.files_at / "plots" / name, plot_path(name))
            copied.append(name)
    missing = [name for name in SECTIONS + PLOTS if name not in copied]
    print(f"copied {copied}" + (f"; not in that run: {missing} (see its run.log)" if missing else ""))


if __name__ == "__main__":
    main()
