"""The report's figures: real PNG files of the expected size, with something drawn on them."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from autocomp.app.report.plots import (
    DPI,
    WIDTH_INCHES,
    best_so_far_chart,
    layer_chart,
    pareto_chart,
)

LAYERS = [f"layer{i}.conv" for i in range(6)]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def drawn_fraction(path) -> float:
    """The fraction of pixels that are not white (the figure's background)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)[..., :3]
    return float(np.mean(np.any(pixels < 0.95, axis=-1)))


BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours


def has_colour(path, rgb) -> bool:
    import matplotlib.image

    pixels = np.round(matplotlib.image.imread(path)[..., :3] * 255)
    return int(np.sum(np.all(np.abs(pixels - rgb) <= 2, axis=-1))) > 500


def test_a_layer_chart_has_one_panel_per_quantity(tmp_path):
    one = layer_chart(tmp_path / "one.png", LAYERS, {"kept": {"uniform": [0.5] * 6}}, "one")
    two = layer_chart(
        tmp_path / "two.png",
        LAYERS,
        {"kept": {"uniform": [0.5] * 6, "amc": [0.2, 0.4, 0.6, 0.8, 1, 1]}, "weight bits": {"haq": [8, 6, 4, 4, 6, 8]}},
        "two",
    )
    (w1, h1), (w2, h2) = png_size(one), png_size(two)
    assert w1 == w2 == round(WIDTH_INCHES * DPI) and h2 > h1 > 200
    assert 0.02 < drawn_fraction(one) < 0.8 and 0.02 < drawn_fraction(two) < 0.8  # not blank, not filled
    assert has_colour(one, BLUE) and not has_colour(one, ORANGE)  # one policy: one bar colour
    assert has_colour(two, BLUE) and has_colour(two, ORANGE)  # uniform and amc side by side (haq: blue again)


def test_a_layer_chart_refuses_series_of_another_length(tmp_path):
    with pytest.raises(ValueError, match="'amc' has 2 kept values for 6 layers"):
        layer_chart(tmp_path / "bad.png", LAYERS, {"kept": {"amc": [0.1, 0.2]}}, "bad")
    assert not (tmp_path / "bad.png").exists()


def test_the_pareto_and_best_so_far_charts_are_drawn(tmp_path):
    points = [(0.4, 0.80), (0.5, 0.85), (0.45, 0.70), (0.3, 0.75)]
    pareto = pareto_chart(
        tmp_path / "pareto.png",
        points,
        [(0.3, 0.75), (0.4, 0.80), (0.5, 0.85)],
        {"best": (0.5, 0.85)},
        "MACs (fraction of the baseline)",
        "front",
        limit=0.5,
        reference=("baseline", 0.9),
    )
    curve = best_so_far_chart(tmp_path / "curve.png", [0.5, None, 0.7, 0.6, 0.8], "best so far")
    for path in (pareto, curve):
        width, height = png_size(path)
        assert width == round(WIDTH_INCHES * DPI) and 300 < height < 700 and drawn_fraction(path) > 0.02
