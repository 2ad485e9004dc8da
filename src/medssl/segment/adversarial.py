"""Adversarial segmentation as a ``medssl.systems.System``: the segmenter (the plan's U-Net) is the generator of a
GAN whose discriminator is Luc et al.'s image-level CNN, SegAN's multi-scale critic or Hung et al.'s per-pixel
confidence network (semi-supervised, with unlabelled images); registered as segmentation system "adversarial"."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from torch.nn.functional import cross_entropy

from medssl import registry
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.networks.discriminators import (
    FCDiscriminator,
    LucDiscriminator,
    SegANCritic,
    class_maps,
    luc_input,
    multiscale_l1,
    product_input,
    scaled_truth,
    target_maps,
)
from medssl.segment.supervised import SupervisedSegmentation
from medssl.systems import IMAGE, TARGET, UNLABELLED, Batch

__all__ = ["DEFAULT_ADVERSARIAL_WEIGHTS", "AdversarialSegmentation", "masked_pseudo_label_loss"]

Discriminator = Literal["luc", "segan", "semi"]
LucInput = Literal["basic", "product", "scaling"]

#: lambda of the segmenter's adversarial term per discriminator when ``adversarial_weight`` is None: Hung et al.'s
#: lambda_adv for labelled images (0.01), SegAN's unweighted sum of critic loss and Dice (1.0), and 0.1 for Luc et
#: al. (a choice: their paper's value could not be checked here).
DEFAULT_ADVERSARIAL_WEIGHTS: dict[str, float] = {"luc": 0.1, "segan": 1.0, "semi": 0.01}
_DISCRIMINATOR = "discriminator."


class AdversarialSegmentation(SupervisedSegmentation):
    """Supervised segmentation (Dice + cross-entropy, augmentation, validation and prediction of
    ``SupervisedSegmentation``) trained against a discriminator; optimiser groups ``"generator"`` (the network)
    and ``"discriminator"``.

    Each group's loss:

    - ``luc``: the discriminator minimises ``BCE(D(real), 1) + BCE(D(predicted), 0)`` over (image, class maps) pairs
      (``luc_input``); the segmenter adds ``adversarial_weight * BCE(D(predicted), 1)`` (the flipped target).
    - ``segan``: the critic maximises ``multiscale_l1`` between its features of image x predicted and image x true
      class maps (its loss is the negative); the segmenter adds ``adversarial_weight * multiscale_l1``. The critic's
      weights are clipped to ``[-critic_clip, critic_clip]`` after each step, as SegAN's public code does.
    - ``semi``: the discriminator maps class maps to a confidence logit per pixel and minimises the per-pixel
      ``BCE(D(true), 1) + BCE(D(predicted), 0)``, the predictions of the unlabelled images counted as predicted
      too. The segmenter adds ``adversarial_weight * BCE(D(predicted), 1)`` on labelled images and, on unlabelled
      ones, ``semi_adversarial_weight * BCE(D(predicted), 1) + semi_weight * masked_pseudo_label_loss`` (its own
      argmax, or sigmoid > 0.5 per structure, as targets where ``sigmoid(D) > semi_threshold``). Unlabelled images
      never enter the supervised loss.

    For the first ``warmup_steps`` the segmenter's loss is the supervised one alone; the discriminator trains from
    the start (so that it is not untrained when its terms switch on). The predictions in the discriminator's own
    loss are detached; the engine takes each group's gradient from its own loss only, so the segmenter's terms never
    move the discriminator.

    The state dict is the network's own keys (as ``SupervisedSegmentation``'s) and the discriminator's under
    ``discriminator.``; ``export()`` is ``{"network": the segmenter}``.

    Args:
        network: maps ``(B, C, *patch)`` to ``(B, K, *patch)`` logits.
        plan: the dataset plan (task, classes, channels, patch size).
        discriminator: ``luc`` (Luc et al. 2016), ``segan`` (Xue et al. 2018) or ``semi`` (Hung et al. 2018, uses
            the unlabelled training images).
        luc_input: what Luc's discriminator sees: ``basic`` (class maps), ``product`` (each image channel times
            each class map) or ``scaling`` (class maps; real ones are the truth rescaled to put at least
            ``luc_tau`` on the true class and otherwise follow the prediction).
        luc_tau: tau of the ``scaling`` input (the paper's 0.9).
        adversarial_weight: lambda of the segmenter's adversarial term on labelled images; None: the
            discriminator's default (luc 0.1, segan 1.0, semi 0.01 as Hung et al.).
        semi_weight: weight of the pseudo-label loss on unlabelled images (``semi``; Hung et al.'s 0.1).
        semi_adversarial_weight: weight of the adversarial term on unlabelled images (``semi``; Hung et al.'s 0.001).
        semi_threshold: discriminator confidence (sigmoid) above which an unlabelled pixel's prediction becomes its
            target (``semi``; Hung et al.'s 0.2).
        warmup_steps: steps with the supervised loss alone (the discriminator still trains).
        critic_clip: SegAN's critic weight clipping after each step; None: no clipping.
        discriminator_widths: channels of the discriminator's strided convolutions (one per scale).
        settings: ``sw_overlap``, ``rotate_degrees``, ``scale_range``, ``affine_probability``, ``seed``: as
            ``SupervisedSegmentation`` (``run_settings``).
    """

    def __init__(
        self,
        network: nn.Module,
        plan: Plan,
        *,
        discriminator: Discriminator = "semi",
        luc_input: LucInput = "product",
        luc_tau: float = 0.9,
        adversarial_weight: float | None = None,
        semi_weight: float = 0.1,
        semi_adversarial_weight: float = 0.001,
        semi_threshold: float = 0.2,
        warmup_steps: int = 0,
        critic_clip: float | None = 0.05,
        discriminator_widths: tuple[int, ...] = (32, 64, 128, 256),
        **settings: Any,
    ) -> None:
        super().__init__(network, plan, **settings)
        if discriminator not in DEFAULT_ADVERSARIAL_WEIGHTS:
            raise MedsslError(f"discriminator must be one of luc, segan, semi, not {discriminator!r}")
        if luc_input not in ("basic", "product", "scaling"):
            raise MedsslError(f"luc_input must be one of basic, product, scaling, not {luc_input!r}")
        weight = DEFAULT_ADVERSARIAL_WEIGHTS[discriminator] if adversarial_weight is None else adversarial_weight
        for name, value in (
            ("adversarial_weight", weight),
            ("semi_weight", semi_weight),
            ("semi_adversarial_weight", semi_adversarial_weight),
            ("warmup_steps", warmup_steps),
        ):
            if value < 0:
                raise MedsslError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= semi_threshold <= 1.0:
            raise MedsslError(f"semi_threshold must be in [0, 1], got {semi_threshold}")
        if not 0.0 < luc_tau < 1.0:
            raise MedsslError(f"luc_tau must be in (0, 1), got {luc_tau}")
        if critic_clip is not None and critic_clip <= 0:
            raise MedsslError(f"critic_clip must be > 0 or null, got {critic_clip}")
        self.kind, self.luc_kind, self.luc_tau = discriminator, luc_input, luc_tau
        self.adversarial_weight, self.semi_weight = float(weight), semi_weight
        self.semi_adversarial_weight, self.semi_threshold = semi_adversarial_weight, semi_threshold
        self.warmup_steps, self.critic_clip = warmup_steps, critic_clip
        self.num_classes = plan.out_channels
        dims, k, c = plan.spatial_dims, plan.out_channels, plan.in_channels
        widths = tuple(discriminator_widths)
        if discriminator == "luc":
            self.discriminator: nn.Module = LucDiscriminator(dims, c * k if luc_input == "product" else k, widths)
        elif discriminator == "segan":
            self.discriminator = SegANCritic(dims, c * k, widths)
        else:
            self.discriminator = FCDiscriminator(dims, k, widths)
        self.uses_unlabelled = discriminator == "semi"
        # runs after SupervisedSegmentation's hook, which prefixes every key with network.
        self._register_load_state_dict_pre_hook(_unprefix_discriminator, with_module=True)

    @classmethod
    def for_run(
        cls,
        plan: Plan,
        cfg: FinetuneConfig,
        *,
        seed: int = 0,
        discriminator: Discriminator = "semi",
        luc_input: LucInput = "product",
        luc_tau: float = 0.9,
        adversarial_weight: float | None = None,
        semi_weight: float = 0.1,
        semi_adversarial_weight: float = 0.001,
        semi_threshold: float = 0.2,
        warmup_steps: int = 0,
        critic_clip: float | None = 0.05,
        discriminator_widths: tuple[int, ...] = (32, 64, 128, 256),
    ) -> AdversarialSegmentation:
        """The system ``medssl finetune --set system=adversarial`` trains: the plan's U-Net with the augmentation
        and validation settings of ``cfg``, and this system's options (see the class)."""
        from medssl.segment.predict import build_network

        return cls(
            build_network(plan),
            plan,
            discriminator=discriminator,
            luc_input=luc_input,
            luc_tau=luc_tau,
            adversarial_weight=adversarial_weight,
            semi_weight=semi_weight,
            semi_adversarial_weight=semi_adversarial_weight,
            semi_threshold=semi_threshold,
            warmup_steps=warmup_steps,
            critic_clip=critic_clip,
            discriminator_widths=tuple(discriminator_widths),
            **cls.run_settings(cfg, seed),
        )

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """``"generator"``: the network's trainable parameters; ``"discriminator"``: the discriminator's."""
        return {
            "generator": [p for p in self.network.parameters() if p.requires_grad],
            "discriminator": [p for p in self.discriminator.parameters() if p.requires_grad],
        }

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``{"generator": ..., "discriminator": ...}`` (see the class) and, logged only, ``supervised``,
        ``adversarial`` and, for ``semi`` with unlabelled images, ``semi`` and ``confident`` (the share of
        unlabelled pixels above the threshold)."""
        x, y = self.augment(batch[IMAGE], batch[TARGET])
        logits = self.network(x)
        supervised = self.loss(logits, y)
        probs = class_maps(logits, multilabel=self.multilabel)
        truth = target_maps(y, self.num_classes, multilabel=self.multilabel)
        adversarial = step >= self.warmup_steps
        shown: dict[str, Tensor] = {}
        if self.kind == "luc":
            d_loss, g_terms = self._luc(x, probs, truth, adversarial)
        elif self.kind == "segan":
            d_loss, g_terms = self._segan(x, probs, truth, adversarial)
        else:
            d_loss, g_terms = self._semi(probs, truth, batch.get(UNLABELLED), adversarial, shown)
        generator = supervised + sum(g_terms.values(), torch.zeros((), device=x.device))
        logged = {"supervised": supervised.detach(), **{k: v.detach() for k, v in g_terms.items()}, **shown}
        return {"generator": generator, "discriminator": d_loss, **logged}

    def _luc(self, x: Tensor, probs: Tensor, truth: Tensor, adversarial: bool) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.discriminator
        fake = probs.detach()
        real = truth
        if self.luc_kind == "scaling":
            real = scaled_truth(fake, truth, self.luc_tau, multilabel=self.multilabel)
        real_logit = d(luc_input(self.luc_kind, x, real))
        fake_logit = d(luc_input(self.luc_kind, x, fake))
        d_loss = bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
        if not adversarial:
            return d_loss, {}
        g_logit = d(luc_input(self.luc_kind, x, probs))
        return d_loss, {"adversarial": self.adversarial_weight * bce(g_logit, torch.ones_like(g_logit))}

    def _segan(self, x: Tensor, probs: Tensor, truth: Tensor, adversarial: bool) -> tuple[Tensor, dict[str, Tensor]]:
        critic = self.discriminator
        true_features = critic(product_input(x, truth))
        d_loss = -multiscale_l1(critic(product_input(x, probs.detach())), true_features)  # the critic maximises it
        if not adversarial:
            return d_loss, {}
        g_loss = multiscale_l1(critic(product_input(x, probs)), true_features)
        return d_loss, {"adversarial": self.adversarial_weight * g_loss}

    def _semi(
        self, probs: Tensor, truth: Tensor, unlabelled: Tensor | None, adversarial: bool, shown: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.discriminator
        fake = probs.detach()
        u_logits = u_probs = None
        if unlabelled is not None and len(unlabelled):
            u_logits = self.network(unlabelled)
            u_probs = class_maps(u_logits, multilabel=self.multilabel)
            fake = torch.cat([fake, u_probs.detach()])  # Hung et al.'s unlabelled predictions count as predicted
        real_logit, fake_logit = d(truth), d(fake)
        d_loss = bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
        if not adversarial:
            return d_loss, {}
        g_logit = d(probs)
        terms = {"adversarial": self.adversarial_weight * bce(g_logit, torch.ones_like(g_logit))}
        if u_logits is not None and u_probs is not None:
            confidence = d(u_probs)
            terms["semi_adversarial"] = self.semi_adversarial_weight * bce(confidence, torch.ones_like(confidence))
            confident = torch.sigmoid(confidence.detach()) > self.semi_threshold
            semi = masked_pseudo_label_loss(u_logits, confident, multilabel=self.multilabel)
            terms["semi"] = self.semi_weight * semi
            shown["confident"] = confident.float().mean()
        return d_loss, terms

    def after_step(self, step: int, max_steps: int) -> None:
        """SegAN: clip the critic's weights (its step has been taken)."""
        if self.kind == "segan" and self.critic_clip is not None:
            with torch.no_grad():
                for p in self.discriminator.parameters():
                    p.clamp_(-self.critic_clip, self.critic_clip)


def masked_pseudo_label_loss(logits: Tensor, mask: Tensor, *, multilabel: bool) -> Tensor:
    """Hung et al.'s semi-supervised loss: cross-entropy of ``logits (B, K, *S)`` against their own argmax (or, per
    structure, sigmoid > 0.5), averaged over the pixels where ``mask (B, 1, *S)`` is set; zero where none is."""
    weight = mask.to(logits.dtype)
    if multilabel:
        pseudo = (logits.detach() > 0).to(logits.dtype)
        per_pixel = bce(logits, pseudo, reduction="none") * weight
        return per_pixel.sum() / (weight.sum() * logits.shape[1]).clamp(min=1)
    pseudo_index = logits.detach().argmax(1)
    per_pixel = cross_entropy(logits, pseudo_index, reduction="none") * weight[:, 0]
    return per_pixel.sum() / weight.sum().clamp(min=1)


def _unprefix_discriminator(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load pre-hook after ``SupervisedSegmentation``'s: ``<prefix>network.discriminator.<key>`` (which that hook
    made of the discriminator's keys) -> ``<prefix>discriminator.<key>``."""
    moved = prefix + "network." + _DISCRIMINATOR
    for key in [k for k in state if k.startswith(moved)]:
        state[prefix + _DISCRIMINATOR + key[len(moved) :]] = state.pop(key)


registry.register_object(
    "segmentation",
    "adversarial",
    AdversarialSegmentation,
    description="the segmenter against a discriminator: Luc et al. (luc), SegAN's critic (segan) or Hung et al.'s "
    "semi-supervised confidence maps on unlabelled images (semi, default)",
)
