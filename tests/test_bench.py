"""The benchmarks themselves still run: each command with the smallest arguments it takes, as a
real process, writing into a results folder in tmp_path (BENCH_RESULTS) rather than this
checkout's BENCHMARKS.md. They exercise the service's internals (graphs, codecs, settings), so a
change there can break them unseen; these tests check that they run and report, not their numbers."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

import bench
from bench.harness import REPO
from tests.conftest import SHIPPED_WEIGHTS, image_file

BENCH_MODULES = sorted(
    info.name for info in pkgutil.walk_packages(bench.__path__, "bench.") if not info.ispkg
)  # fmt: skip


def checkout_results() -> dict[str, int]:
    """This checkout's own results: BENCHMARKS.md and the plots, by modification time."""
    paths = [REPO / "BENCHMARKS.md", *(REPO / "bench" / "plots").glob("*")]
    return {str(path): path.stat().st_mtime_ns for path in paths if path.exists()}


def run_bench(results: Path, *args: str, timeout_s: float = 240) -> str:
    """``python -m <args>`` from the repo root with its results sent to ``results``; what it wrote
    there. This checkout's BENCHMARKS.md and plots must stay untouched."""
    before = checkout_results()
    env = {**os.environ, "BENCH_RESULTS": str(results), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert checkout_results() == before, "a benchmark wrote into the checkout, not BENCH_RESULTS"
    return (results / "BENCHMARKS.md").read_text()


def section(text: str, name: str) -> str:
    found = re.search(f"<!-- {name}:start -->(.*?)<!-- {name}:end -->", text, re.S)
    assert found is not None, f"no section {name} in:\n{text[:2000]}"
    return found.group(1)


def test_every_bench_module_imports_and_explains_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys) -> None:  # type: ignore[no-untyped-def]
    """Nothing runs at import, and every command answers --help (a command without a parser would run
    instead: its results then go to tmp_path, not this checkout)."""
    import bench.report

    monkeypatch.setattr(bench.report, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench.report, "PLOTS", tmp_path / "plots")
    assert "bench.serving" in BENCH_MODULES and "bench.device.collect" in BENCH_MODULES
    commands = 0
    for name in BENCH_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "main"):
            monkeypatch.setattr(sys, "argv", [name, "--help"])
            with pytest.raises(SystemExit) as exited:
                module.main()
            assert exited.value.code == 0, name
            assert "usage:" in capsys.readouterr().out, name
            commands += 1
    assert commands >= 20


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


def test_the_reproduce_line_is_the_command_as_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.report import command_line

    monkeypatch.setitem(sys.modules, "__main__", SimpleNamespace(__spec__=SimpleNamespace(name="bench.ab")))
    monkeypatch.setattr(sys, "argv", ["/repo/bench/ab.py", "--base", "/tmp/old copy", "--only", "a b", "--rounds", "6"])
    assert command_line() == "python -m bench.ab --base '/tmp/old copy' --only 'a b' --rounds 6"
    shown = command_line({"/tmp/old copy": "<checkout of 37c3095>"})
    assert shown == "python -m bench.ab --base <checkout of 37c3095> --only 'a b' --rounds 6"


def test_device_collect_copies_a_runs_sections_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a GPU run sends back lands in BENCHMARKS.md and bench/plots/ (here both in tmp_path)."""
    import bench.report
    from bench.device import collect

    run = tmp_path / "files_at"
    (run / "plots").mkdir(parents=True)
    (run / "BENCHMARKS.md").write_text("<!-- serving-gpu:start -->\non an H200\n<!-- serving-gpu:end -->\n")
    (run / "plots" / "serving-gpu.png").write_bytes(b"png")
    here = tmp_path / "checkout"
    here.mkdir()
    (here / "BENCHMARKS.md").write_text("# Benchmarks\n\n<!-- serving-cpu:start -->\nkept\n<!-- serving-cpu:end -->\n")
    monkeypatch.setattr(bench.report, "BENCHMARKS", here / "BENCHMARKS.md")
    monkeypatch.setattr(bench.report, "PLOTS", here / "bench" / "plots")
    monkeypatch.setattr(sys, "argv", ["collect", str(run)])
    collect.main()
    text = (here / "BENCHMARKS.md").read_text()
    assert "on an H200" in section(text, "serving-gpu") and "kept" in section(text, "serving-cpu")
    assert (here / "bench" / "plots" / "serving-gpu.png").read_bytes() == b"png"


@pytest.mark.anyio
async def test_the_peer_style_baseline_reconstructs_like_the_service(test_digits: np.ndarray) -> None:
    """(b) of the serving benchmark is a fair comparison: same weights, same reconstruction."""
    import torch

    from bench.naive_service import app
    from service.checkpoint import load_checkpoint

    digit = test_digits[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://peer") as client:
        response = await client.post("/reconstruct", content=image_file(digit))
    assert response.status_code == 200
    served = np.asarray(response.json()["reconstruction"], dtype=np.float32)
    model = load_checkpoint(SHIPPED_WEIGHTS).model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(digit / np.float32(255))[None, None]).clamp(0, 1)[0, 0].numpy()
    assert served.shape == (28, 28)
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_raw_forward_rates_cover_eager_and_both_graphs() -> None:
    from bench.serving import raw_forward_images_per_s

    rates = raw_forward_images_per_s(batch=8, repeats=2)
    assert set(rates) == {"eager", "traced, as trained", "traced"}
    assert all(np.isfinite(rate) and rate > 0 for rate in rates.values())


@pytest.mark.parametrize(
    ("args", "name"),
    [
        pytest.param(["bench.forward_layers", "--batch", "2", "--batches", "1", "8", "--rounds", "1",
                      "--repeats", "1"], "forward-layers", id="forward_layers"),
        pytest.param(["bench.npy_header", "--rounds", "1", "--bodies", "10"], "npy-header", id="npy_header"),
        pytest.param(["bench.deadlines", "--rounds", "1", "--reads", "10"], "deadlines", id="deadlines"),
        pytest.param(["bench.access_log", "--rounds", "1", "--lines", "10"], "access-log", id="access_log"),
        pytest.param(["bench.multipart", "--rounds", "1"], "multipart", id="multipart"),
        pytest.param(["bench.train_step", "--steps", "2", "--rounds", "1"], "train-step", id="train_step"),
        pytest.param(["bench.gil", "--batches", "1", "8", "--repeats", "2"], "gil", id="gil"),
    ],
)  # fmt: skip
def test_in_process_benchmark_runs_and_reports(tmp_path: Path, args: list[str], name: str) -> None:
    text = section(run_bench(tmp_path, *args), name)
    assert f"Reproduce: `python -m {' '.join(args)}`" in text and "Machine: " in text
    assert re.search(r"\bnan\b|\binf\b", text, re.I) is None, text


def test_load_benchmark_against_a_live_server(tmp_path: Path, mnist_dir: Path) -> None:
    text = section(run_bench(tmp_path, "bench.load", "--clients", "4", "--requests", "200"), "load")
    assert "Reproduce: `python -m bench.load --clients 4 --requests 200`" in text


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench-deps)")
def test_the_gpu_serving_script_runs_on_cpu(tmp_path: Path) -> None:
    """bench/device/run.sh gets one try on a lent GPU: its serving step must work before it goes."""
    text = run_bench(tmp_path, "bench.serving_gpu", "--device", "cpu", "--rounds", "1", "--seconds", "1")
    body = section(text, "serving-gpu-script-on-cpu")
    assert "Reproduce: `python -m bench.serving_gpu --device cpu --rounds 1 --seconds 1`" in body
    assert body.count("| server ") == 8, body  # two servers x four loads
    assert (tmp_path / "bench" / "plots" / "serving-gpu-script-on-cpu.png").stat().st_size > 1000
