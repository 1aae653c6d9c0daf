from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from service.checkpoint import load_checkpoint
from tests.conftest import REPO
from training import loop, train
from training.evaluate import Evaluation


def _run(tmp: Path, mnist_dir: Path, *args: str) -> int:
    return train.main([*args, "--data-dir", str(mnist_dir), "--out", str(tmp), "--no-progress"])


@pytest.mark.integration
def test_cli_writes_a_verified_checkpoint_metrics_and_pictures(tmp_path: Path, mnist_dir: Path) -> None:
    assert _run(tmp_path, mnist_dir, "--epochs", "2", "--limit", "1000", "--batch-size", "50") == 0
    ckpt = load_checkpoint(tmp_path / "autoencoder.safetensors")
    meta = ckpt.metadata
    assert meta["training"]["epochs"] == 2 and meta["training"]["limit"] == 1000
    assert meta["training"]["batch_size"] == 50 and meta["training"]["train_images"] == 1000
    assert set(meta["metrics"]) >= {"test_mse", "test_psnr", "test_ssim", "per_digit_mse"}
    assert set(meta["metrics"]["per_digit_mse"]) == {str(d) for d in range(10)}
    assert meta["dataset"]["md5"]["t10k-images-idx3-ubyte"] == "2646ac647ad5339dbf082846283269ea"
    # then the novelty head, on the images trained on, and a calibration of both scores
    assert ckpt.config.novelty_channels == 32 and meta["training"]["novelty"]["digits"] == 1000
    assert ckpt.calibration is not None and ckpt.calibration.decision_score == "novelty"
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_mse", "test_mse", "test_psnr", "lr"} <= set(lines[0])
    assert lines[-1]["test_mse"] == pytest.approx(meta["metrics"]["test_mse"])
    for picture in ("loss_curves.png", "reconstructions.png", "latents.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_training_is_deterministic_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = ("--epochs", "2", "--limit", "600", "--batch-size", "40", "--seed", "7")
    assert _run(tmp_path / "a", mnist_dir, *common) == 0
    assert _run(tmp_path / "b", mnist_dir, *common) == 0

    # run c is interrupted during its second epoch, after the state of the first was saved
    real_check = loop.check_not_collapsed

    def interrupt_in_epoch_2(ev: Evaluation, baseline_mse: float, epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt
        real_check(ev, baseline_mse, epoch)

    monkeypatch.setattr(train, "check_not_collapsed", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "c", mnist_dir, *common)
    monkeypatch.setattr(train, "check_not_collapsed", real_check)
    assert not (tmp_path / "c" / "autoencoder.safetensors").exists()
    assert _run(tmp_path / "c", mnist_dir, "--resume", str(tmp_path / "c" / "train_state.safetensors")) == 0

    a, b, c = (load_checkpoint(tmp_path / r / "autoencoder.safetensors") for r in "abc")
    assert a.sha256 == b.sha256, "same seed, same weights, byte for byte"
    assert c.sha256 == a.sha256, "interrupted + resumed == uninterrupted"
    assert c.metadata["training"]["seed"] == 7, "the resumed run keeps the saved recipe"
    assert [h["epoch"] for h in c.metadata["training"]["history"]] == [1, 2]


def test_bad_flags_are_rejected_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--lr", "-1"])
    assert info.value.code == 2
    assert "--lr must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        train.main(["--precision", "fp16"])
    assert info.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.integration
def test_bf16_training_records_its_precision_and_serves_a_float32_model(tmp_path: Path, mnist_dir: Path) -> None:
    assert _run(tmp_path, mnist_dir, "--epochs", "1", "--limit", "2000", "--precision", "bf16") == 0
    ckpt = load_checkpoint(tmp_path / "autoencoder.safetensors")
    assert ckpt.metadata["training"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in ckpt.model.parameters())
    assert ckpt.metadata["metrics"]["test_mse"] < 0.05  # it learned: a constant image scores ~0.095


@pytest.mark.integration
def test_divergence_stops_without_saving(tmp_path: Path, mnist_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = _run(tmp_path, mnist_dir, "--epochs", "1", "--limit", "1000", "--lr", "1.0")
    assert code == 1
    assert "collapsed" in caplog.text
    assert not (tmp_path / "autoencoder.safetensors").exists()


def test_bf16_on_a_cpu_without_it_is_warned_about(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(train, "runs_bfloat16_natively", lambda device: False)
    assert _run(tmp_path, mnist_dir, "--epochs", "1", "--limit", "2000", "--precision", "bf16") == 0
    assert "no bfloat16 arithmetic: emulated, slower than fp32" in caplog.text


@pytest.mark.integration
def test_one_class_training_records_its_digits_and_calibrates_on_held_out_ones(tmp_path: Path, mnist_dir: Path) -> None:
    args = (
        "--epochs",
        "2",
        "--limit",
        "500",
        "--batch-size",
        "25",
        "--digits",
        "3",
        "--code-size",
        "8",
        "--validation",
        "2000",
    )
    assert _run(tmp_path, mnist_dir, *args) == 0
    ckpt = load_checkpoint(tmp_path / "autoencoder.safetensors")
    training = ckpt.metadata["training"]
    assert training["digits"] == [3] and training["code_size"] == 8 and training["train_images"] == 500
    assert ckpt.config.code_size == 8 and ckpt.config.latent_shape == (8, 1, 1)
    assert training["novelty_channels"] == 0 and ckpt.config.novelty_channels == 0, "no head: it learns ten digits"
    assert set(ckpt.metrics["per_digit_mse"]) == {"3"}, "scored on its own digit"
    calibration = ckpt.calibration
    assert calibration is not None and calibration.digits == (3,) and calibration.split == "validation"
    # the held-out images: the 3s among the last 2,000 of the training split
    from training.data import hold_out, load_mnist

    held_out = hold_out(load_mnist(mnist_dir, train=True), 2000)[1].of_digits((3,))
    assert calibration.images == training["held_out_images"] == len(held_out)


@pytest.mark.integration
def test_calibrate_recomputes_the_same_calibration_and_keeps_the_weights(tmp_path: Path, mnist_dir: Path) -> None:
    from training import calibrate

    # enough steps that the collapse check never fires (10 steps of 300 images can look collapsed)
    args = ("--epochs", "2", "--limit", "1000", "--batch-size", "50", "--validation", "1000")
    assert _run(tmp_path, mnist_dir, *args) == 0
    path = tmp_path / "autoencoder.safetensors"
    before = load_checkpoint(path)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["calibration"]  # as a checkpoint from before calibration existed, trained with a held-out split
    meta_path.write_text(json.dumps(meta))
    assert load_checkpoint(path).calibration is None
    assert calibrate.main([str(path), "--data-dir", str(mnist_dir)]) == 0
    after, trained = load_checkpoint(path).calibration, before.calibration
    assert load_checkpoint(path).sha256 == before.sha256
    assert after is not None and trained is not None
    assert after.images == trained.images == 1000 and after.split == "validation"
    assert after.threshold(0.99) == pytest.approx(trained.threshold(0.99), rel=1e-5)
    assert after.novelty is not None and after.decision_score == "novelty"
    # without a recorded held-out split: the test set, and it says so
    meta = json.loads(meta_path.read_text())
    del meta["training"]["validation"]
    meta_path.write_text(json.dumps(meta))
    assert calibrate.main([str(path), "--data-dir", str(mnist_dir)]) == 0
    fallback = load_checkpoint(path).calibration
    assert fallback is not None and fallback.split == "test" and fallback.images == 10_000


def test_calibrate_refuses_what_it_cannot_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training import calibrate

    assert calibrate.main([str(tmp_path / "missing.safetensors")]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.integration
def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path, mnist_dir: Path) -> None:
    """kill -9 in the middle of an epoch: every file on disk is whole (the train state of the last
    finished epoch, no checkpoint yet), and --resume ends with the uninterrupted run's weights."""
    common = ["--epochs", "3", "--limit", "1500", "--batch-size", "32", "--seed", "5", "--novelty-channels", "0"]

    def command(out: Path, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "training",
            *args,
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(out),
            "--no-progress",
        ]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(command(whole, *common), cwd=REPO, check=True, capture_output=True, timeout=600)
    run = subprocess.Popen(command(killed, *common), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "train_state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 2 of 3
    run.send_signal(signal.SIGKILL)
    assert run.wait(30) == -signal.SIGKILL
    assert state.exists() and not (killed / "autoencoder.safetensors").exists(), "killed after epoch 1, before the end"
    assert not list(killed.glob(".*.tmp")), "nothing was being written when it died"
    subprocess.run(command(killed, "--resume", str(state)), cwd=REPO, check=True, capture_output=True, timeout=600)
    a, b = (load_checkpoint(run_dir / "autoencoder.safetensors") for run_dir in (whole, killed))
    assert b.sha256 == a.sha256, "killed + resumed == uninterrupted, byte for byte"
    assert [h["epoch"] for h in b.metadata["training"]["history"]] == [1, 2, 3]
