"""attnzoo.viz.maps: attention maps over an image, and channel gates."""

import numpy as np
import pytest
import torch

from attnzoo.viz.maps import channel_gates_png_bytes, image_maps_png_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_maps_of_any_grid_size_are_drawn_over_the_image():
    image = torch.rand(28, 28)
    png = image_maps_png_bytes(image, [torch.rand(14, 14), np.random.rand(7, 7), [[0.0, 1.0], [1.0, 0.0]]],
                               ["stage 0", "stage 1", "stage 2"])
    assert png.startswith(PNG_MAGIC)
    assert image_maps_png_bytes(image, [np.zeros((3, 3))], ["all zero"]).startswith(PNG_MAGIC)  # no 0/0
    with pytest.raises(ValueError, match="2 maps but 1 titles"):
        image_maps_png_bytes(image, [np.ones((2, 2))] * 2, ["one"])
    with pytest.raises(ValueError, match=r"image must be \(H, W\)"):
        image_maps_png_bytes(torch.rand(1, 28, 28), [np.ones((2, 2))], ["x"])


def test_channel_gates_one_panel_per_stage():
    png = channel_gates_png_bytes([torch.rand(4, 8), torch.rand(4, 16)], ["a", "b", "c", "d"], ["s0", "s1"])
    assert png.startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match=r"gates must be \(N, C\) each with N = 3 rows"):
        channel_gates_png_bytes([torch.rand(4, 8)], ["a", "b", "c"], ["s0"])
