import pytest
import torch
from captum.attr import LayerAttribution
from torch.nn import functional as F

from subnets import upsampling


@pytest.mark.parametrize("size", [(12, 10), (4, 5), (3, 2), (7, 13)])
def test_bilinear_is_torch_bilinear_interpolation(size):
    maps = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(upsampling.bilinear(maps, size),
                               F.interpolate(maps, size=size, mode="bilinear",
                                             align_corners=False))


def test_bilinear_is_captums_interpolation():
    cam = torch.rand(3, 1, 7, 7)
    torch.testing.assert_close(upsampling.bilinear(cam, (32, 32)),
                               LayerAttribution.interpolate(cam, (32, 32),
                                                            interpolate_mode="bilinear"))


def test_bilinear_keeps_dtype_and_passes_gradients():
    maps = torch.rand(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    up = upsampling.bilinear(maps, (6, 6))
    up.sum().backward()
    assert up.dtype == torch.float64
    # each output pixel's weights sum to one, so the gradients sum to the output's size
    torch.testing.assert_close(maps.grad.sum(), torch.tensor(2 * 36.0, dtype=torch.float64))


def test_bilinear_names_a_bad_size():
    with pytest.raises(ValueError, match="size"):
        upsampling.bilinear(torch.zeros(1, 1, 2, 2), (4,))
