from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from service.codecs import npy
from service.codecs.npy import npy_bytes, read_npy
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge


def save(array: np.ndarray, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def test_round_trip() -> None:
    array = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(read_npy(npy_bytes(array), max_elements=10**6), array)


def test_fortran_order_loads_with_the_right_values() -> None:
    array = np.asfortranarray(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    blob = save(array)
    assert b"'fortran_order': True" in blob
    np.testing.assert_array_equal(read_npy(blob, max_elements=10**6), array)


def test_big_endian_floats_load() -> None:
    array = np.linspace(0, 1, 784, dtype=">f4").reshape(28, 28)
    np.testing.assert_array_equal(read_npy(save(array), max_elements=10**6), array)


def test_object_arrays_are_refused_without_unpickling() -> None:
    blob = save(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match=r"holds Python objects; pickled \.npy data is never loaded"):
        read_npy(blob, max_elements=10**6)


@pytest.mark.parametrize("dtype", ["complex64", "U5", "datetime64[s]"])
def test_non_numeric_dtypes_are_refused(dtype: str) -> None:
    with pytest.raises(InvalidInput, match="is not supported"):
        read_npy(save(np.zeros(4, dtype=dtype)), max_elements=10**6)


def test_structured_dtypes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="is not supported"):
        read_npy(save(np.zeros(2, dtype=[("a", "f4"), ("b", "f4")])), max_elements=10**6)


def test_huge_declared_shape_is_refused_before_allocating() -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.float32))
    header["shape"] = (100_000_000, 28, 28)  # 314 GB declared, 64 bytes sent
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with pytest.raises(PayloadTooLarge, match=r"declares shape \(100000000, 28, 28\)"):
        read_npy(buffer.getvalue() + b"\0" * 64, max_elements=10**6)


def test_mangled_header_is_malformed() -> None:
    blob = save(np.zeros((1, 28, 28), np.float32)).replace(b"(1, 28, 28)", b"(1, 28, 28(")
    with pytest.raises(MalformedBody, match=r"not a valid \.npy file"):
        read_npy(blob, max_elements=10**6)


def test_body_shorter_or_longer_than_declared_is_malformed() -> None:
    blob = save(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(MalformedBody, match="but the body holds"):
        read_npy(blob[:-10], max_elements=10**6)
    with pytest.raises(MalformedBody, match="but the body holds"):
        read_npy(blob + b"extra", max_elements=10**6)


def test_garbage_is_malformed() -> None:
    for blob in (b"", b"not npy at all", b"\x93NUMPY\x01\x00\xff\xff{'descr'"):
        with pytest.raises(MalformedBody, match=r"not a valid \.npy file"):
            read_npy(blob, max_elements=10**6)


CANONICAL_CASES = [
    np.zeros((), np.float32),
    np.arange(5, dtype=np.uint8),
    np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28),
    np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32),
    np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3)),
    np.array([[True, False]]),
    np.arange(4, dtype="<i2").reshape(1, 4),
    np.zeros((0, 28, 28), np.uint8),
    np.zeros((123456, 1), np.uint8),
]


@pytest.mark.parametrize("array", CANONICAL_CASES, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_headers_as_np_save_writes_them_take_the_quick_path_and_read_as_numpy_does(array: np.ndarray) -> None:
    blob = save(array)
    assert npy._canonical_header(blob) is not None
    loaded = read_npy(blob, max_elements=10**6)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, np.load(io.BytesIO(blob)))


def _with_header(header: bytes, payload: bytes) -> bytes:
    padded = header + b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded + payload


@pytest.mark.parametrize(
    "header",
    [
        b'{"descr": "|u1", "fortran_order": False, "shape": (2, 3)}',  # double quotes
        b"{'shape': (2, 3), 'fortran_order': False, 'descr': '|u1'}",  # another key order
        b"{'descr':'|u1','fortran_order':False,'shape':(2,3)}",  # no spaces
        b"{'descr': '<u1', 'fortran_order': False, 'shape': (2, 3), }",  # '<' for a one-byte type
    ],
)
def test_other_valid_headers_are_read_by_numpys_parser(header: bytes) -> None:
    blob = _with_header(header, bytes(range(6)))
    assert npy._canonical_header(blob) is None
    np.testing.assert_array_equal(read_npy(blob, max_elements=100), np.arange(6, dtype=np.uint8).reshape(2, 3))


def test_damaged_headers_never_read_differently_than_numpys_parser() -> None:
    rng = np.random.default_rng(7)
    blob = save(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    quick_ones = 0
    for _ in range(2000):
        damaged = bytearray(blob)
        at = int(rng.integers(8, 128))
        damaged[at] = int(rng.choice(list(b"0123456789,() '<>|fuib\n")))
        damaged_blob = bytes(damaged)
        quick = npy._canonical_header(damaged_blob)
        if quick is None:
            continue
        quick_ones += 1
        try:
            expected = npy._numpy_header(damaged_blob)
        except MalformedBody:
            raise AssertionError(f"numpy refuses a header the quick path reads: {damaged_blob[:128]!r}") from None
        assert quick[:3] == expected[:3] and quick[3] == expected[3], damaged_blob[:128]
    assert quick_ones > 100


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 1, 28, 28), np.float32),
        np.random.default_rng(2).random((256, 16, 7, 7), dtype=np.float32),
        np.zeros((), np.float32),
        np.arange(5, dtype=np.uint8),
        np.zeros((123_456_789_012, 0), np.uint8),  # a long dimension: the header grows past one 64-byte block
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),  # written in C order
        np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2],  # not contiguous, big-endian
    ],
    ids=lambda a: f"{a.dtype.str}{a.shape}",
)
def test_written_npy_is_what_np_save_writes(array: np.ndarray) -> None:
    blob = npy_bytes(array)
    assert blob == save(np.array(array, order="C"))
    assert len(blob) % 64 == (array.nbytes % 64)  # the header block is padded to a multiple of 64 bytes
    loaded = np.load(io.BytesIO(blob))
    assert loaded.shape == array.shape and loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)
