"""The memory burst of scripts/docker-smoke.sh: many clients at once, each posting the largest
legal JSON batch (bench/burst.py), against a running container, whose memory cgroup is sampled
all along: its peak, as `docker stats` counts memory (usage less inactive file pages), against its
limit.

    python scripts/memory_burst.py http://127.0.0.1:18000 CGROUP_DIR > result.json

CGROUP_DIR is the container's memory cgroup: /sys/fs/cgroup/memory/docker/<id> (cgroup v1) or
/sys/fs/cgroup/system.slice/docker-<id>.scope (v2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, from the repo's root

from bench.burst import burst, largest_json_body


def used_bytes(cgroup: Path) -> int:
    """What `docker stats` shows: the cgroup's memory usage less its inactive file pages."""
    v1 = (cgroup / "memory.usage_in_bytes").exists()
    usage = int((cgroup / ("memory.usage_in_bytes" if v1 else "memory.current")).read_text())
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    return usage - int(stat.get("total_inactive_file" if v1 else "inactive_file", 0))


def limit_bytes(cgroup: Path) -> int:
    v1 = cgroup / "memory.limit_in_bytes"
    return int((v1 if v1.exists() else cgroup / "memory.max").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("cgroup", type=Path)
    parser.add_argument("--clients", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--api-key", default=os.environ.get("MNIST_AE_API_KEY"), help="default: $MNIST_AE_API_KEY")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise SystemExit("load goes to loopback only")
    idle = peak = used_bytes(args.cgroup)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.02):
            peak = max(peak, used_bytes(args.cgroup))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    statuses, refusals = asyncio.run(burst(args.url, largest_json_body(), args.clients, args.rounds, headers=headers))
    stop.set()
    sampler.join()
    limit = limit_bytes(args.cgroup)
    result = {
        "statuses": statuses,
        "idle_mb": round(idle / 2**20),
        "peak_mb": round(peak / 2**20),
        "limit_mb": round(limit / 2**20),
        "peak_share": round(peak / limit, 3),
        "refusal_median_s": round(sorted(refusals)[len(refusals) // 2], 2) if refusals else None,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
