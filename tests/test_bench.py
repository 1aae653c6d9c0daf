"""The benchmarks still run: each command with the smallest arguments it takes, as a real process,
writing into a results folder in tmp_path (BENCH_RESULTS) rather than this checkout's
BENCHMARKS.md. They use the service's internals (codecs, predictor, settings), so a change there
can break them unseen; these tests check that they run and report, not their numbers. Nothing
from bench/ is imported here: each runs as ``python -m bench.<name>``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint
from tests.conftest import SHIPPED_WEIGHTS, image_file
from tests.harness import REPO, start_server, stop_server

pytestmark = pytest.mark.integration
BENCH_COMMANDS = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in (REPO / "bench").rglob("*.py")
    if path.name != "__init__.py" and "def main(" in path.read_text()
)
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench-deps)")
needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed (make bench-deps)")


def checkout_results() -> dict[str, int]:
    """This checkout's own results: BENCHMARKS.md and the plots, by modification time."""
    paths = [REPO / "BENCHMARKS.md", *(REPO / "bench" / "plots").glob("*")]
    return {str(path): path.stat().st_mtime_ns for path in paths if path.exists()}


def run_bench(results: Path, *args: str, timeout_s: float = 300) -> str:
    """``python -m <args>`` from the repo root with its results sent to ``results``; what it wrote
    there. This checkout's BENCHMARKS.md and plots must stay untouched."""
    before = checkout_results()
    env = {**os.environ, "BENCH_RESULTS": str(results), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert checkout_results() == before, "a benchmark wrote into the checkout, not BENCH_RESULTS"
    return (results / "BENCHMARKS.md").read_text()


def section(text: str, name: str) -> str:
    found = re.search(f"<!-- {name}:start -->(.*?)<!-- {name}:end -->", text, re.S)
    assert found is not None, f"no section {name} in:\n{text[:2000]}"
    return found.group(1)


def test_every_bench_command_explains_itself() -> None:
    """Nothing runs at import, and every command answers --help (one interpreter for them all)."""
    assert {"bench.serving", "bench.memory", "bench.train_speed", "bench.device.collect"} <= set(BENCH_COMMANDS)
    script = (
        "import contextlib, importlib, io, sys\n"
        f"for name in {BENCH_COMMANDS!r}:\n"
        "    sys.argv = [name, '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            importlib.import_module(name).main()\n"
        "        except SystemExit as exited:\n"
        "            assert exited.code == 0, name\n"
        "    assert 'usage:' in out.getvalue(), name\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_results_go_where_bench_results_says(tmp_path: Path) -> None:
    """A section is written once, replaced in place on a rerun, and others are left as they were."""
    code = (
        "from bench.report import write_section\n"
        "write_section('first', 'python -m bench.first', 'one')\n"
        "write_section('second', 'python -m bench.second', 'two')\n"
        "write_section('first', 'python -m bench.first --again', 'three')\n"
    )
    results = tmp_path / "not" / "made" / "yet"
    env = {**os.environ, "BENCH_RESULTS": str(results)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
    text = (results / "BENCHMARKS.md").read_text()
    assert text.startswith("# Benchmarks")
    assert section(text, "first").startswith("\nthree") and "`python -m bench.first --again`" in text
    assert section(text, "second").startswith("\ntwo")
    assert text.index("first:start") < text.index("second:start") and text.count(":start -->") == 2


def test_device_collect_copies_a_runs_sections_and_plots(tmp_path: Path) -> None:
    """What a GPU run sends back lands in BENCHMARKS.md and bench/plots/ (here both in tmp_path)."""
    run = tmp_path / "files_at"
    (run / "plots").mkdir(parents=True)
    (run / "BENCHMARKS.md").write_text("<!-- serving-gpu:start -->\non an H200\n<!-- serving-gpu:end -->\n")
    (run / "plots" / "serving-gpu.png").write_bytes(b"png")
    here = tmp_path / "checkout"
    here.mkdir()
    (here / "BENCHMARKS.md").write_text("# Benchmarks\n\n<!-- serving-cpu:start -->\nkept\n<!-- serving-cpu:end -->\n")
    text = run_bench(here, "bench.device.collect", str(run))
    assert "on an H200" in section(text, "serving-gpu") and "kept" in section(text, "serving-cpu")
    assert (here / "bench" / "plots" / "serving-gpu.png").read_bytes() == b"png"


def test_the_peer_style_baseline_reconstructs_like_the_service(tmp_path: Path, test_digits: np.ndarray) -> None:
    """(b) of the serving benchmark is a fair comparison: same weights, same reconstruction."""
    peer = start_server(
        tmp_path / "peer.log", {}, command=("-m", "uvicorn", "bench.naive_service:app"), ready_path="/healthz"
    )
    try:
        response = httpx.post(f"{peer.url}/reconstruct", content=image_file(test_digits[0]))
    finally:
        stop_server(peer)
    assert response.status_code == 200
    served = np.asarray(response.json()["reconstruction"], dtype=np.float32)
    model = load_checkpoint(SHIPPED_WEIGHTS).model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(test_digits[0] / np.float32(255))[None, None]).clamp(0, 1)[0, 0].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-6)


@needs_wrk
@needs_h2load
def test_the_serving_benchmark_runs_against_the_ceiling(tmp_path: Path) -> None:
    text = run_bench(tmp_path, "bench.serving", "--requests", "300", "--rounds", "1")
    body = section(text, "serving-cpu-cuda-build" if torch.version.cuda else "serving-cpu-cpu-build")
    assert "Reproduce: `python -m bench.serving --requests 300 --rounds 1`" in body
    assert "(a) HTTP ceiling" in body and "x (a)**" in body and "| decode" in body
    assert "| gRPC `ModelInfer`" in body and "| REST `/v2/models/mnist-ae/infer`" in body
    assert re.search(r"\bnan\b|\binf\b", body, re.I) is None, body


@needs_wrk
def test_the_batching_benchmark_runs(tmp_path: Path) -> None:
    body = section(run_bench(tmp_path, "bench.batching", "--seconds", "1"), "batching")
    assert "Reproduce: `python -m bench.batching --seconds 1`" in body


def test_the_load_benchmark_runs(tmp_path: Path, mnist_dir: Path) -> None:
    text = section(run_bench(tmp_path, "bench.load", "--clients", "4", "--requests", "200"), "load")
    assert "Reproduce: `python -m bench.load --clients 4 --requests 200`" in text


@needs_wrk
def test_the_gpu_serving_script_runs_on_cpu(tmp_path: Path) -> None:
    """bench/device/run.sh gets one try on a lent GPU: its serving step must work before it goes."""
    text = run_bench(tmp_path, "bench.serving_gpu", "--device", "cpu", "--rounds", "1", "--seconds", "1")
    body = section(text, "serving-gpu-script-on-cpu")
    assert "Reproduce: `python -m bench.serving_gpu --device cpu --rounds 1 --seconds 1`" in body
    assert body.count("| server ") == 8, body  # two servers x four loads
    assert (tmp_path / "bench" / "plots" / "serving-gpu-script-on-cpu.png").stat().st_size > 1000


@needs_wrk
def test_the_memory_benchmark_runs(tmp_path: Path) -> None:
    text = run_bench(tmp_path, "bench.memory", "--requests", "300", "--rounds", "1", "--trials", "1")
    body = section(text, "memory-cuda-build" if torch.version.cuda else "memory-cpu-build")
    assert "Reproduce: `python -m bench.memory --requests 300 --rounds 1 --trials 1`" in body and "MB at most" in body


@needs_wrk
def test_the_workers_benchmark_runs(tmp_path: Path) -> None:
    body = section(run_bench(tmp_path, "bench.workers", "--rounds", "1", "--seconds", "1"), "workers")
    assert "Reproduce: `python -m bench.workers --rounds 1 --seconds 1`" in body and "2 workers" in body


@needs_wrk
def test_compare_runs_another_revision_side_by_side() -> None:
    """bench.compare against HEAD, its weights/ exported on their own: the same code and checkpoint
    answer every example byte for byte."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare", "HEAD", "--weights-from", "HEAD", "--rounds", "1", "--seconds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = re.search(r"identical answers: (\d+) of (\d+)", done.stdout)
    assert counts is not None and counts.group(1) == counts.group(2) and int(counts.group(2)) > 20, done.stdout
    assert re.search(r"\| single PNG, 64 connections \(req/s\) \| [\d,]+ \| [\d,]+ \| [\d.]+x \|", done.stdout)
    assert "| this checkout | HEAD with HEAD's weights | ratio |" in done.stdout


@pytest.mark.integration
def test_the_burst_bench_keeps_the_server_within_its_memory(tmp_path: Path) -> None:
    body = section(run_bench(tmp_path, "bench.burst", "--clients", "12", "--rounds", "1"), "burst")
    assert "Reproduce: `python -m bench.burst --clients 12 --rounds 1`" in body
    row = next(line for line in body.splitlines() if line.startswith("| 1024 MB"))
    share = float(row.split("|")[4].strip(" *%"))
    assert share <= 85, row
