"""python -m training.export_onnx: the three ONNX files run in onnxruntime and agree with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.checkpoint import load_checkpoint
from tests.conftest import SHIPPED_WEIGHTS
from training import export_onnx

pytestmark = pytest.mark.integration  # the torch.export tracing takes ~10 s


def test_the_exported_models_match_pytorch_at_any_batch_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export_onnx.main([str(SHIPPED_WEIGHTS), "--out", str(tmp_path)]) == 0
    assert "encoder" in capsys.readouterr().out
    checkpoint = load_checkpoint(SHIPPED_WEIGHTS)
    model = checkpoint.model.eval()
    rng = np.random.default_rng(0)
    for n in (1, 7, 300):  # the batch axis is dynamic
        images = rng.random((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            x = torch.from_numpy(images)
            latents = model.encode(x)
            expected = {
                "encoder": latents.numpy(),
                "decoder": model.decode_images(latents).numpy(),
                "autoencoder": model.reconstruct(x).numpy(),
            }
        inputs = {"encoder": images, "decoder": expected["encoder"], "autoencoder": images}
        for name, want in expected.items():
            session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
            (got,) = session.run(None, {session.get_inputs()[0].name: inputs[name]})
            assert got.shape == want.shape
            assert float(np.abs(got - want).max()) <= 1e-5, (name, n)
    for name in ("encoder", "decoder", "autoencoder"):
        proto = onnx.load(str(tmp_path / f"{name}.onnx"))
        metadata = {p.key: p.value for p in proto.metadata_props}
        assert metadata["checkpoint_sha256"] == checkpoint.sha256
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "a named, dynamic batch axis"
    # what the served model answers is clamped: so is the exported decoder's
    session = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    (wild,) = session.run(None, {"latents": rng.normal(0, 50, (4, 16, 7, 7)).astype(np.float32)})
    assert wild.min() >= 0.0 and wild.max() <= 1.0


def test_a_missing_checkpoint_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_onnx.main([str(tmp_path / "nope.safetensors")]) == 2
    assert "file not found" in capsys.readouterr().err
