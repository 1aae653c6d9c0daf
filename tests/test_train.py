from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from service.checkpoint import load_checkpoint
from service.model import AutoEncoder
from training import train
from training.data import MnistSplit
from training.evaluate import Evaluation
from training.train import Recipe, TrainingDiverged


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    recipe = Recipe(lr=0.01, schedule="cosine", warmup_epochs=1.0)
    spe, total = 10, 100
    lrs = [recipe.lr_at(s, total, spe) for s in range(total)]
    assert lrs[0] == pytest.approx(0.001)  # 1/10 of the way up
    assert lrs[9] == pytest.approx(0.01)  # peak at the end of the warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:])), "monotone decay after the warm-up"
    assert lrs[-1] < 0.01 * 1e-2
    assert Recipe(lr=0.01, schedule="constant").lr_at(57, total, spe) == 0.01


def test_warmup_is_capped_for_short_runs() -> None:
    recipe = Recipe(lr=0.01, warmup_epochs=5.0)
    lrs = [recipe.lr_at(s, 20, 20) for s in range(20)]  # one epoch: warm-up would be the whole run
    assert max(lrs) == pytest.approx(0.01) and lrs.index(max(lrs)) == 3  # capped at a fifth


def _subset(split: MnistSplit, n: int) -> torch.Tensor:
    return split.images[:n]


@pytest.mark.slow
def test_a_few_hundred_steps_lower_the_loss(mnist_test: MnistSplit) -> None:
    torch.manual_seed(0)
    model = AutoEncoder().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = _subset(mnist_test, 2048)
    losses = []
    for epoch in range(5):  # 5 x 64 = 320 steps of 32 images
        losses.append(
            train.train_one_epoch(
                model, opt, images, batch_size=32, device=torch.device("cpu"),
                generator=torch.Generator().manual_seed(epoch), lr_for_step=lambda s: 3e-3, first_step=epoch * 64,
            )
        )  # fmt: skip
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 0.03  # far below the ~0.1 of a constant image


def test_non_finite_loss_stops_training() -> None:
    model = AutoEncoder()
    with torch.no_grad():
        model.en[0].weight[0, 0, 0, 0] = float("nan")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    with pytest.raises(TrainingDiverged, match=r"loss became nan.*lower --lr"):
        train.train_one_epoch(
            model, opt, images, batch_size=32, device=torch.device("cpu"), generator=torch.Generator(),
            lr_for_step=lambda s: 1e-3, first_step=0,
        )  # fmt: skip


def _evaluation(mse: float, output_std: float) -> Evaluation:
    return Evaluation(mse=mse, psnr=0.0, ssim=None, per_digit_mse={}, output_std=output_std, images=10)


def test_collapse_is_detected() -> None:
    train.check_not_collapsed(_evaluation(0.004, 0.3), baseline_mse=0.095, epoch=3)
    with pytest.raises(TrainingDiverged, match="collapsed"):
        train.check_not_collapsed(_evaluation(0.096, 0.05), baseline_mse=0.095, epoch=3)
    with pytest.raises(TrainingDiverged, match="collapsed"):
        train.check_not_collapsed(_evaluation(0.05, 0.0), baseline_mse=0.095, epoch=3)
    with pytest.raises(TrainingDiverged, match="no longer finite"):
        train.check_not_collapsed(_evaluation(math.nan, 0.3), baseline_mse=0.095, epoch=3)


def _run(tmp: Path, mnist_dir: Path, *args: str) -> int:
    return train.main([*args, "--data-dir", str(mnist_dir), "--out", str(tmp), "--no-progress"])


@pytest.mark.slow
def test_cli_writes_a_verified_checkpoint_metrics_and_pictures(tmp_path: Path, mnist_dir: Path) -> None:
    assert _run(tmp_path, mnist_dir, "--epochs", "2", "--limit", "1000", "--batch-size", "50") == 0
    ckpt = load_checkpoint(tmp_path / "autoencoder.safetensors")
    meta = ckpt.metadata
    assert meta["training"]["epochs"] == 2 and meta["training"]["limit"] == 1000
    assert meta["training"]["batch_size"] == 50 and meta["training"]["train_images"] == 1000
    assert set(meta["metrics"]) >= {"test_mse", "test_psnr", "test_ssim", "per_digit_mse"}
    assert set(meta["metrics"]["per_digit_mse"]) == {str(d) for d in range(10)}
    assert meta["dataset"]["md5"]["t10k-images-idx3-ubyte"] == "2646ac647ad5339dbf082846283269ea"
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_mse", "test_mse", "test_psnr", "lr"} <= set(lines[0])
    assert lines[-1]["test_mse"] == pytest.approx(meta["metrics"]["test_mse"])
    for picture in ("loss_curves.png", "reconstructions.png", "latents.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_training_is_deterministic_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = ("--epochs", "2", "--limit", "600", "--batch-size", "40", "--seed", "7")
    assert _run(tmp_path / "a", mnist_dir, *common) == 0
    assert _run(tmp_path / "b", mnist_dir, *common) == 0

    # run c is interrupted during its second epoch, after the state of the first was saved
    real_check = train.check_not_collapsed

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


@pytest.mark.slow
def test_divergence_stops_without_saving(tmp_path: Path, mnist_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = _run(tmp_path, mnist_dir, "--epochs", "1", "--limit", "1000", "--lr", "1.0")
    assert code == 1
    assert "collapsed" in caplog.text
    assert not (tmp_path / "autoencoder.safetensors").exists()
