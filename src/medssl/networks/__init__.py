"""medssl.networks: dimension-agnostic (2D/3D) encoders, the U-Net and encoder weight files, and the parts of
other systems: pretraining heads (``heads``) and reconstruction decoder (``decoders``), S3-Net's network
(``s3_blocks``, 2D) and its deformable convolution (``deformable``).

``Encoder`` is the contract shared by networks and pretraining methods; ``layers`` is the only module that maps
``spatial_dims`` to layer classes.
"""

from medssl.networks.encoders import Encoder, UNetEncoder
from medssl.networks.resnet import ResNetEncoder, resnet_encoder
from medssl.networks.unet import UNet, build_unet
from medssl.networks.weights import load_checkpoint_file, load_encoder, save_encoder

__all__ = [
    "Encoder",
    "ResNetEncoder",
    "UNet",
    "UNetEncoder",
    "build_unet",
    "load_checkpoint_file",
    "load_encoder",
    "resnet_encoder",
    "save_encoder",
]
