"""The interface every self-supervised pretraining method implements.

A method is a ``medssl.systems.System`` that owns its encoder (a ``medssl.networks.Encoder``), its heads and its
loss. ``losses(images, generator)`` computes named losses of raw images ``(B, C, *spatial)`` (the method builds its
own views through its ``views`` callable); ``training_step(batch, step)``, the system contract the engine calls,
is ``losses`` of the batch's ``image``. A method never calls ``backward()`` or steps an optimiser. After each
optimiser step the engine calls ``after_step`` (momentum updates live there). ``export_encoder`` gives the encoder
to save with ``medssl.networks.save_encoder`` and fine-tune; ``export`` names it ``"encoder"``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeAlias

import torch
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks import Encoder, UNetEncoder
from medssl.pretrain.augment import RandomViews
from medssl.systems import IMAGE, Batch, System

__all__ = ["DEFAULT_CHANNELS", "PretrainMethod", "ViewFn", "build_encoder"]

ViewFn: TypeAlias = Callable[[Tensor, torch.Generator | None], tuple[Tensor, Tensor]]
"""``views(x, generator) -> (view_a, view_b)``: two augmented views of every image of ``x (B, C, *S)``."""

# Small enough for CPU runs and tests; paper presets pass wider channels or their own encoder.
DEFAULT_CHANNELS = (16, 32, 64, 128)


def build_encoder(
    spatial_dims: int | None,
    in_channels: int | None,
    channels: Sequence[int] | None,
    encoder: Encoder | None,
) -> Encoder:
    """The encoder a method trains: ``encoder`` if given, else a ``UNetEncoder(spatial_dims, in_channels, channels)``.

    Raises:
        ValueError: ``encoder`` is not an ``Encoder``, is given together with ``channels``, or disagrees with
            ``spatial_dims``/``in_channels``; or, without ``encoder``, ``spatial_dims``/``in_channels`` is missing.
    """
    if encoder is None:
        if spatial_dims is None or in_channels is None:
            raise ValueError("spatial_dims and in_channels are required unless an encoder is given")
        return UNetEncoder(spatial_dims, in_channels, DEFAULT_CHANNELS if channels is None else channels)
    if not isinstance(encoder, Encoder):
        raise ValueError(f"encoder must be a medssl Encoder, got {type(encoder).__name__}")
    if channels is not None:
        raise ValueError("give either channels (to build a UNetEncoder) or encoder, not both")
    for arg, given, have in (
        ("spatial_dims", spatial_dims, encoder.spatial_dims),
        ("in_channels", in_channels, encoder.in_channels),
    ):
        if given is not None and given != have:
            raise ValueError(f"{arg}={given} disagrees with the encoder's {arg}={have}")
    return encoder


class PretrainMethod(System):
    """Abstract self-supervised pretraining method around one ``Encoder``.

    Args:
        spatial_dims: 2 or 3; required unless ``encoder`` is given.
        in_channels: image channels; required unless ``encoder`` is given.
        channels: widths of the ``UNetEncoder`` to build, finest first (default ``DEFAULT_CHANNELS``).
        encoder: an existing encoder to pretrain instead of building one.
        views: ``views(x, generator) -> (view_a, view_b)``; default ``RandomViews()``.

    Attributes:
        name: the registry name (set by ``medssl.pretrain.registry.register``).
        encoder: the (online) encoder being pretrained.
        views: the view generator.
        spatial_dims, in_channels: taken from the encoder.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
    ) -> None:
        super().__init__()
        self.encoder: Encoder = build_encoder(spatial_dims, in_channels, channels, encoder)
        self.spatial_dims: int = self.encoder.spatial_dims
        self.in_channels: int = self.encoder.in_channels
        self.views: ViewFn = RandomViews() if views is None else views

    @abc.abstractmethod
    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Compute the losses of a batch of images; never calls ``backward()``.

        Args:
            batch: raw images ``(B, in_channels, *S)``, every size of ``S`` divisible by
                ``encoder.required_divisor``.
            generator: random source for views and noise (``None``: torch's global one).

        Returns:
            Named scalar losses; ``"loss"`` is the total to minimise, the other entries are detached, for logging.
        """

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``losses`` of ``batch["image"]``, views drawn from torch's global generator (other fields ignored)."""
        return self.losses(batch[IMAGE])

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group ``"main"`` of every parameter, frozen momentum copies included (they get no gradient, so AdamW
        leaves them alone): the optimiser state layout of earlier versions, whose checkpoints ``--resume`` reads."""
        return {"main": list(self.parameters())}

    def export(self) -> dict[str, nn.Module]:
        """``{"encoder": export_encoder()}``."""
        return {"encoder": self.export_encoder()}

    def export_encoder(self) -> Encoder:
        """The (online) encoder to save and fine-tune; the live module, not a copy."""
        return self.encoder

    def make_views(self, batch: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Check ``batch`` and return ``self.views(batch, generator)``, two views of equal shape.

        Raises:
            MedsslError: the batch does not fit the encoder, or the views are not two tensors of one shape that fit.
        """
        if not batch.is_floating_point():
            batch = batch.to(torch.get_default_dtype())
        self.encoder.check_input(batch)
        view_a, view_b = self.views(batch, generator)
        if view_a.shape != view_b.shape or view_a.shape[:2] != batch.shape[:2]:
            raise MedsslError(
                f"views must return two tensors of one shape (B={batch.shape[0]}, C={batch.shape[1]}, ...); "
                f"got {tuple(view_a.shape)} and {tuple(view_b.shape)}"
            )
        self.encoder.check_input(view_a)
        return view_a, view_b
