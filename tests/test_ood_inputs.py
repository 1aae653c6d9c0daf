"""Non-digits made as MNIST made its digits (training/ood_inputs.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from training.ood_inputs import LETTERS, SYMBOLS, families, font_files, mnist_style, render_characters, scribbles


def test_mnist_style_fits_the_ink_in_20x20_centred_by_its_mass() -> None:
    canvas = Image.new("L", (300, 120), 0)
    ImageDraw.Draw(canvas).rectangle((40, 30, 240, 70), fill=255)  # a wide bar, off-centre
    image = mnist_style(np.asarray(canvas))
    rows, cols = np.nonzero(image)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert cols.max() - cols.min() + 1 == 20, "the longer side is scaled to 20"
    assert 3 <= rows.max() - rows.min() + 1 <= 6, "the aspect ratio is kept"
    weights = image.astype(np.float64)
    centre = [(weights.sum(axis=axis) * np.arange(28)).sum() / weights.sum() for axis in (1, 0)]
    np.testing.assert_allclose(centre, [13.5, 13.5], atol=0.6)
    assert not mnist_style(np.zeros((50, 50), np.uint8)).any()


def test_characters_render_in_the_bundled_font_without_system_fonts() -> None:
    letters = render_characters(LETTERS, files=[])
    assert letters.shape == (len(LETTERS), 28, 28)
    assert all(image.any() for image in letters)
    assert len({image.tobytes() for image in letters}) == len(LETTERS), "every letter is its own picture"


def test_installed_fonts_add_their_letters() -> None:
    files = font_files()
    assert render_characters("A", files=files).shape[0] == 1 + len(files)


def test_scribbles_are_repeatable_and_varied() -> None:
    first, again, other = scribbles(8, seed=3), scribbles(8, seed=3), scribbles(8, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert all(image.any() for image in first)


def test_every_family_is_there() -> None:
    digits = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    made = families(digits, fonts=[])
    assert set(made) == {"letters", "symbols", "scribbles", "noise", "blank", "white", "inverted"}
    assert made["letters"].shape[0] == len(LETTERS) and made["symbols"].shape[0] == len(SYMBOLS)
    np.testing.assert_array_equal(made["inverted"], 255 - digits)
    assert all(images.dtype == np.uint8 and images.shape[1:] == (28, 28) for images in made.values())
