"""The 3D convolution that runs single-sample CPU inference in oneDNN: same values, and the path it takes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from medssl.networks import layers


@pytest.fixture
def onednn_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the direct oneDNN calls."""
    calls: list[int] = []
    direct = torch.mkldnn_convolution

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return direct(*args)

    monkeypatch.setattr(torch, "mkldnn_convolution", counted)
    yield calls


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "groups", "bias"),
    [(3, 1, 1, 1, True), (3, 2, 1, 1, False), (3, 1, 2, 1, True), (3, 1, 1, 4, True), (1, 1, 1, 1, True)],
)
def test_single_sample_inference_equals_the_standard_convolution(
    onednn_calls: list[int], kernel: int, stride: int, dilation: int, groups: int, bias: bool
) -> None:
    torch.manual_seed(0)
    conv = layers.conv(3, 8, 12, kernel_size=kernel, stride=stride, dilation=dilation, groups=groups, bias=bias)
    x = torch.randn(1, 8, 7, 10, 9)  # odd, unequal sizes: a swapped axis or padding shows
    with torch.no_grad():
        got = conv(x)
        want = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert onednn_calls, "batch-1 inference did not take the oneDNN path"
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_training_batches_autocast_and_tracing_keep_the_standard_path(onednn_calls: list[int]) -> None:
    conv = layers.conv(3, 2, 4)
    one, two = torch.randn(1, 2, 6, 6, 6), torch.randn(2, 2, 6, 6, 6)
    conv(one).sum().backward()  # gradients wanted: training
    assert conv.weight.grad is not None
    with torch.no_grad():
        conv(two)  # a batch: PyTorch's dispatch already takes oneDNN
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(one).dtype == torch.bfloat16  # autocast still casts
        torch.jit.trace(conv, one, check_trace=False)
        conv(one)
    assert len(onednn_calls) == 1  # only the last call, a float32 sample without gradients
    assert isinstance(conv, torch.nn.Conv3d) and set(conv.state_dict()) == {"weight", "bias"}
