"""medssl.pretrain: self-supervised pretraining methods behind one interface (``PretrainMethod``).

Each method (a ``medssl.systems.System``) owns an ``Encoder``, its heads and its loss, builds its own views and
returns named losses from ``losses(images)`` (``training_step(batch, step)`` for the engine); ``export_encoder()``
gives the encoder that ``medssl.networks.save_encoder`` writes for fine-tuning. Importing this package registers
the built-in methods: ``names()`` lists them, ``create(name, ...)`` builds one.
"""

from medssl.networks.heads import ConvProjectionHead, PredictionHead, ProjectionHead
from medssl.pretrain.augment import RandomViews
from medssl.pretrain.autoencoder import DenoisingAutoencoder
from medssl.pretrain.base import PretrainMethod, ViewFn
from medssl.pretrain.byol import BYOL, MomentumMethod, cosine_momentum, update_momentum
from medssl.pretrain.losses import NTXentLoss, byol_loss, kl_divergence
from medssl.pretrain.mim import MIM
from medssl.pretrain.pcrl import PCRL
from medssl.pretrain.pgl import PGL, PGLViews
from medssl.pretrain.registry import create, get, names, register
from medssl.pretrain.simclr import SimCLR
from medssl.pretrain.vae import VAE

__all__ = [
    "BYOL",
    "MIM",
    "PCRL",
    "PGL",
    "VAE",
    "ConvProjectionHead",
    "DenoisingAutoencoder",
    "MomentumMethod",
    "NTXentLoss",
    "PGLViews",
    "PredictionHead",
    "PretrainMethod",
    "ProjectionHead",
    "RandomViews",
    "SimCLR",
    "ViewFn",
    "byol_loss",
    "cosine_momentum",
    "create",
    "get",
    "kl_divergence",
    "names",
    "register",
    "update_momentum",
]
