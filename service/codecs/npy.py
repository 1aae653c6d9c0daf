"""NumPy ``.npy`` bodies <-> arrays, without pickle and without trusting the header.

``np.load`` would allocate whatever shape a header declares before reading a byte of
data, and can unpickle object arrays. Here the header is parsed first, the declared
size is checked against the limit and against the bytes actually present, and the data
is viewed with ``np.frombuffer``: nothing is allocated for a lie.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from service.errors import InvalidInput, MalformedBody, PayloadTooLarge

_MAX_HEADER_BYTES = 10_000


def read_npy(data: bytes, *, max_elements: int) -> np.ndarray:
    """Parse a ``.npy`` body into a read-only array of numbers (bool, int, uint or float).

    C and Fortran order both load correctly. Object, structured and complex dtypes are
    refused, as are shapes over ``max_elements`` and bodies whose size disagrees with the header.
    """
    header = _canonical_header(data)
    if header is not None:
        shape, fortran_order, dtype, offset = header
    else:
        shape, fortran_order, dtype, offset = _numpy_header(data)
    if dtype.hasobject:
        raise InvalidInput(f"dtype {dtype} holds Python objects; pickled .npy data is never loaded")
    if dtype.kind not in "buif":
        raise InvalidInput(f"dtype {dtype} is not supported; send uint8 (0..255) or float32 ([0,1])")
    count = 1
    for dim in shape:
        count *= dim
    if count > max_elements:
        raise PayloadTooLarge(f".npy header declares shape {shape} = {count} values, over the limit of {max_elements}")
    payload = memoryview(data)[offset:]
    if len(payload) != count * dtype.itemsize:
        raise MalformedBody(
            f".npy header declares shape {shape} of {dtype} = {count * dtype.itemsize} bytes, "
            f"but the body holds {len(payload)}"
        )
    flat = np.frombuffer(payload, dtype=dtype, count=count)
    if fortran_order:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


# the header np.save writes (format 1.0), byte for byte: "{'descr': '<u1', 'fortran_order': False,
# 'shape': (3, 28, 28), }", padded with spaces to a multiple of 64 bytes and ended by a newline
_DIM = rb"(?:0|[1-9][0-9]{0,11})"  # as Python writes an int: no leading zeros
_CANONICAL_HEADER = re.compile(
    rb"\{'descr': '([<>|][buif][1248])', 'fortran_order': (False|True), "
    rb"'shape': \(((?:" + _DIM + rb", )*(?:" + _DIM + rb",?)?)\), \} *\n"
)
# the dtypes as np.save names them ("|u1", "<f4", ">i8"...): bool, integers and floats only
_CANONICAL_DTYPES = {
    dtype.str.encode(): dtype
    for dtype in (
        np.dtype(f"{order}{kind}{size}")
        for order in "<>"
        for kind in "buif"
        for size in (1, 2, 4, 8)
        if not (kind == "f" and size == 1) and not (kind == "b" and size != 1)
    )
}


def _canonical_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int] | None:
    """(shape, fortran_order, dtype, data offset) of a header exactly as np.save writes it, read
    with one regex (numpy's own parser runs ast.literal_eval: ~10x slower); None for any other."""
    if len(data) < 10 or not data.startswith(b"\x93NUMPY\x01\x00"):
        return None
    length = int.from_bytes(data[8:10], "little")
    match = _CANONICAL_HEADER.fullmatch(data, 10, 10 + length)
    if match is None:
        return None
    descr, fortran, dims = match.groups()
    dtype = _CANONICAL_DTYPES.get(descr)
    if dtype is None:
        return None
    shape = tuple(int(dim) for dim in dims.split(b",") if dim.strip())
    return shape, fortran == b"True", dtype, 10 + length


def _numpy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=_MAX_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=_MAX_HEADER_BYTES)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported (use 1.0 or 2.0)")
    except Exception as exc:  # numpy's header parser raises ValueError, TokenError, SyntaxError, EOFError...
        raise MalformedBody(f"not a valid .npy file: {exc}") from None
    return shape, fortran_order, dtype, stream.tell()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as a .npy file (format 1.0, C order), as np.load reads it back.

    Every response in .npy goes through here; np.lib.format.write_array builds the same header
    through several layers of Python (~10 µs), this in one format call."""
    if not array.flags.c_contiguous:
        array = array.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    if array.dtype.hasobject or array.dtype.names is not None:
        raise ValueError(f"no .npy for dtype {array.dtype}")
    header = f"{{'descr': '{array.dtype.str}', 'fortran_order': False, 'shape': {array.shape!r}, }}"
    # magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64 as numpy does
    padding = -(10 + len(header) + 1) % 64
    encoded = (header + " " * padding + "\n").encode("latin-1")
    return b"\x93NUMPY\x01\x00" + len(encoded).to_bytes(2, "little") + encoded + array.tobytes()
