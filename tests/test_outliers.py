"""The outlier-exposure set (training/outliers.py): repeatable, MNIST-style, and no characters."""

from __future__ import annotations

import numpy as np
import pytest

from training.outliers import KINDS, outlier_exposure


def digits(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = np.zeros((n, 28, 28), np.uint8)
    labels = np.arange(n) % 2
    for i in range(n):  # a vertical bar for class 0, a horizontal one for class 1, placed at random
        at = int(rng.integers(6, 20))
        if labels[i] == 0:
            images[i, 4:24, at : at + 3] = 255
        else:
            images[i, at : at + 3, 4:24] = 255
    return images, labels


def test_every_kind_is_made_mnist_style_and_repeatably() -> None:
    images, labels = digits()
    made = outlier_exposure(images, labels, dict.fromkeys(KINDS, 6), seed=2)
    assert tuple(made) == KINDS
    for kind, batch in made.items():
        assert batch.shape == (6, 28, 28) and batch.dtype == np.uint8, kind
        assert all(image.any() for image in batch), kind
    again = outlier_exposure(images, labels, dict.fromkeys(KINDS, 6), seed=2)
    for kind in KINDS:
        np.testing.assert_array_equal(made[kind], again[kind])
    assert not np.array_equal(
        made["strokes"], outlier_exposure(images, labels, dict.fromkeys(KINDS, 6), seed=3)["strokes"]
    )


def test_drawings_fit_mnist_s_20x20_box() -> None:
    images, labels = digits()
    for kind in ("strokes", "blobs", "chimeras"):
        for image in outlier_exposure(images, labels, dict.fromkeys(KINDS, 8), seed=4)[kind]:
            rows, cols = np.nonzero(image)
            assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21, kind


def test_chimeras_join_digits_of_two_classes() -> None:
    images, labels = digits()
    chimeras = outlier_exposure(images, labels, dict.fromkeys(KINDS, 30), seed=5)["chimeras"]
    # a vertical and a horizontal bar together: ink both in a long row and a long column
    crossed = [(image.max(axis=1) > 0).sum() > 8 and (image.max(axis=0) > 0).sum() > 8 for image in chimeras]
    assert sum(crossed) >= 20
    with pytest.raises(ValueError, match="two classes"):
        outlier_exposure(images[labels == 0], labels[labels == 0], dict.fromkeys(KINDS, 2))
