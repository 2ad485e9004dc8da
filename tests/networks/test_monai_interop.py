"""A medssl encoder file loads into MONAI's DynUNet, and the two encoders compute the same features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import DynUNet

from medssl.errors import MedsslError
from medssl.networks import UNetEncoder, save_encoder
from medssl.networks.monai_interop import dynunet_arguments, dynunet_encoder_state


def _dynunet_features(net: DynUNet, x: torch.Tensor) -> list[torch.Tensor]:
    features = [net.input_block(x)]
    for block in net.downsamples:
        features.append(block(features[-1]))
    features.append(net.bottleneck(features[-1]))
    return features


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dynunet_encoder_matches_after_loading(spatial_dims: int, tmp_path: Path) -> None:
    encoder = UNetEncoder(spatial_dims, 2, (4, 8, 16))
    with torch.no_grad():  # non-trivial norm parameters, so a lost affine would show
        for name, p in encoder.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) + 0.5)
    path = save_encoder(encoder, tmp_path / "encoder.pt")
    net = DynUNet(**dynunet_arguments(path, out_channels=3))
    missing, unexpected = net.load_state_dict(dynunet_encoder_state(path), strict=False)
    assert not unexpected
    assert not [k for k in missing if k.startswith(("input_block", "downsamples", "bottleneck"))]

    x = torch.randn(2, 2, *(16,) * spatial_dims)
    encoder.eval(), net.eval()
    with torch.no_grad():
        ours, theirs = encoder(x), _dynunet_features(net, x)
        assert len(ours) == len(theirs) == 3
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert net(x).shape == (2, 3, *(16,) * spatial_dims)


def test_only_encoder_files_of_unet_encoders_map(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(MedsslError, match="not a medssl encoder file"):
        dynunet_encoder_state(tmp_path / "plain.pt")
    path = save_encoder(UNetEncoder(2, 1, (4,)), tmp_path / "one.pt")
    with pytest.raises(MedsslError, match="at least 2"):
        dynunet_arguments(path, 2)
