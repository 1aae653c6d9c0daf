"""NumPy ``.npy`` bodies <-> arrays, without pickle and without trusting the header.

``np.load`` would allocate whatever shape a header declares before reading a byte of
data, and can unpickle object arrays. Here the header is parsed first, the declared
size is checked against the limit and against the bytes actually present, and the data
is viewed with ``np.frombuffer``: nothing is allocated for a lie.
"""

from __future__ import annotations

import io

import numpy as np

from service.errors import InvalidInput, MalformedBody, PayloadTooLarge

NPY_MEDIA_TYPE = "application/x-npy"
_MAX_HEADER_BYTES = 10_000


def read_npy(data: bytes, *, max_elements: int) -> np.ndarray:
    """Parse a ``.npy`` body into a read-only array of numbers (bool, int, uint or float).

    C and Fortran order both load correctly. Object, structured and complex dtypes are
    refused, as are shapes over ``max_elements`` and bodies whose size disagrees with the header.
    """
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
    if dtype.hasobject:
        raise InvalidInput(f"dtype {dtype} holds Python objects; pickled .npy data is never loaded")
    if dtype.kind not in "buif":
        raise InvalidInput(f"dtype {dtype} is not supported; send uint8 (0..255) or float32 ([0,1])")
    count = 1
    for dim in shape:
        count *= dim
    if count > max_elements:
        raise PayloadTooLarge(f".npy header declares shape {shape} = {count} values, over the limit of {max_elements}")
    payload = memoryview(data)[stream.tell() :]
    if len(payload) != count * dtype.itemsize:
        raise MalformedBody(
            f".npy header declares shape {shape} of {dtype} = {count * dtype.itemsize} bytes, "
            f"but the body holds {len(payload)}"
        )
    flat = np.frombuffer(payload, dtype=dtype, count=count)
    if fortran_order:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
