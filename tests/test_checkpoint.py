from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from service.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    metadata_path_for,
    save_checkpoint,
)
from service.fileio import atomic_write_bytes, sha256_hex
from service.model import AutoEncoder, ModelConfig


def _same_weights(a: AutoEncoder, b: AutoEncoder) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_weights_and_metadata(tiny_checkpoint: Path, random_model: AutoEncoder) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    assert _same_weights(ckpt.model, random_model)
    assert not ckpt.model.training
    assert ckpt.sha256 == sha256_hex(tiny_checkpoint.read_bytes())
    meta = json.loads(metadata_path_for(tiny_checkpoint).read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["weights_sha256"] == ckpt.sha256
    assert meta["architecture"] == ModelConfig().to_dict()
    assert meta["parameters"] == 7121
    for key in ("training", "dataset", "metrics", "torch_version", "git_commit", "created_at"):
        assert key in meta
    assert ckpt.metrics == {"test_mse": 0.5}
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x), random_model(x), rtol=0, atol=0)


def test_loader_accepts_directory_and_json_paths(tiny_checkpoint: Path) -> None:
    assert load_checkpoint(tiny_checkpoint.parent).path == tiny_checkpoint
    assert load_checkpoint(metadata_path_for(tiny_checkpoint)).path == tiny_checkpoint


def test_tampered_weights_are_refused_naming_the_file(tiny_checkpoint: Path) -> None:
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside a tensor: still a valid safetensors file
    tiny_checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as info:
        load_checkpoint(tiny_checkpoint)
    assert str(tiny_checkpoint) in str(info.value)


def test_truncated_weights_are_refused(tiny_checkpoint: Path) -> None:
    tiny_checkpoint.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated|sha256"):
        load_checkpoint(tiny_checkpoint)


def test_truncated_file_with_matching_metadata_is_still_refused(tiny_checkpoint: Path) -> None:
    # someone "fixes" the hash: the safetensors parser must still refuse the file
    cut = tiny_checkpoint.read_bytes()[:1000]
    tiny_checkpoint.write_bytes(cut)
    meta_path = metadata_path_for(tiny_checkpoint)
    meta = json.loads(meta_path.read_text())
    meta["weights_sha256"] = sha256_hex(cut)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tiny_checkpoint)


def _rewrite(path: Path, state: dict[str, torch.Tensor], **meta_changes: object) -> None:
    """Replace the weights with ``state`` and fix up the recorded sha256 (a consistent but wrong file)."""
    blob = safetensors.torch.save(state)
    path.write_bytes(blob)
    meta_path = metadata_path_for(path)
    meta = json.loads(meta_path.read_text())
    meta.update(weights_sha256=sha256_hex(blob), **meta_changes)
    meta_path.write_text(json.dumps(meta))


def test_weights_of_another_architecture_are_refused(tiny_checkpoint: Path) -> None:
    other = AutoEncoder(ModelConfig(latent_channels=32))
    _rewrite(tiny_checkpoint, other.state_dict())
    with pytest.raises(CheckpointError, match=r"do not fit architecture.*en\.3\.weight has shape") as info:
        load_checkpoint(tiny_checkpoint)
    assert str(tiny_checkpoint) in str(info.value)


def test_metadata_claiming_another_architecture_is_refused(tiny_checkpoint: Path) -> None:
    meta_path = metadata_path_for(tiny_checkpoint)
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["name"] = "resnet18"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet18'"):
        load_checkpoint(tiny_checkpoint)


def test_expected_config_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.safetensors"
    save_checkpoint(AutoEncoder(ModelConfig(latent_channels=32)), path)
    assert load_checkpoint(path).config.latent_shape == (32, 7, 7)
    with pytest.raises(CheckpointError, match="does not match the expected"):
        load_checkpoint(path, expected_config=ModelConfig())


def test_other_format_version_is_refused(tiny_checkpoint: Path) -> None:
    meta_path = metadata_path_for(tiny_checkpoint)
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 2 is not supported"):
        load_checkpoint(tiny_checkpoint)


def test_missing_or_broken_metadata_is_refused(tiny_checkpoint: Path) -> None:
    meta_path = metadata_path_for(tiny_checkpoint)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tiny_checkpoint)
    meta_path.unlink()
    with pytest.raises(CheckpointError, match=r"metadata file .* not found"):
        load_checkpoint(tiny_checkpoint)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found") as info:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert "nope.safetensors" in str(info.value)


def test_non_finite_weights_are_refused(tiny_checkpoint: Path, random_model: AutoEncoder) -> None:
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    state["de.3.weight"][0, 0, 0, 0] = float("nan")
    _rewrite(tiny_checkpoint, state)
    with pytest.raises(CheckpointError, match=r"non-finite .*de\.3\.weight"):
        load_checkpoint(tiny_checkpoint)


def test_seed_style_state_dict_file_loads(tmp_path: Path, random_model: AutoEncoder) -> None:
    path = tmp_path / "seed_model.pth"
    torch.save(random_model.state_dict(), path)  # what the notebook would have written
    ckpt = load_checkpoint(path)
    assert _same_weights(ckpt.model, random_model)
    assert ckpt.metadata == {} and ckpt.metrics == {}


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_seed_style_file_with_arbitrary_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"en.0.weight": _Boom()}, protocol=2))
    with pytest.raises(CheckpointError, match="not a loadable state_dict"):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "good.bin"
    target.write_bytes(b"good")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]  # f.write fails midway
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin"], "no temporary file left behind"
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
