"""MRNet as a segmentation system (Ji et al. CVPR 2021, public code jiwei0921/MRNet): calibrated segmentation from
several raters; registered as "mrnet".

Each step draws three rater-expertise conditions per image, as the public code does: one rater alone (one-hot),
random integer weights in 1..10 normalised, and uniform weights; each condition's target is the c-weighted
average of the raters' masks (a soft label), and the three losses are weighted 1 : 2 : 3 (one-hot : random :
uniform). Three optimiser groups, each trained by its own loss (the engine's rule): ``inference`` (0.7 x the
weighted BCE of the coarse logits + 0.3 x the consistency term), ``reconstruction`` (BCE of each rater's
reconstruction against that rater's mask, on the detached coarse prediction) and ``perception`` (the weighted
BCE of the refined logits, on detached inputs).

Where the public code is wrong, fixed here:

- the perception module's uniform-weight branch is fed the random-weight coarse prediction (``out_p`` for
  ``out_ave``): here every condition gets its own;
- the consistency term compares the reconstruction network's features of the coarse *logits* with those of the
  soft *probability* target, with ``pairwise_distance`` on 4-D tensors (a norm over the last axis only): here
  both inputs are probabilities and the distance is the mean squared difference over every feature axis;
- masks are rotated with bicubic interpolation: here the augmentation warps masks with nearest neighbours.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

from medssl import registry
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.metrics.overlap import dice_scores
from medssl.networks.encoders import UNetEncoder
from medssl.networks.mrnet import ExpertiseUNet, MRNet, PerceptionModule
from medssl.segment.inference import predict_logits
from medssl.segment.supervised import SupervisedSegmentation
from medssl.systems import IMAGE, TARGET, Batch

__all__ = [
    "CONDITION_WEIGHTS",
    "VALIDATION_SCORES",
    "MRNetSegmentation",
    "draw_conditions",
    "rater_bce",
    "raters_mean_dice",
    "soft_target",
]

#: What ``validation_step`` scores (see ``MRNetSegmentation``).
VALIDATION_SCORES = ("raters-mean", "each-rater")
#: Loss weights of the one-hot, random and uniform conditions (the public code's 1 : 2 : 3).
CONDITION_WEIGHTS = (1.0, 2.0, 3.0)


def draw_conditions(batch: int, raters: int, generator: torch.Generator) -> list[Tensor]:
    """The three expertise conditions of a step, each ``(batch, raters)`` summing to 1 per row: one-hot of a random
    rater, random integers in 1..10 normalised, uniform."""
    pick = torch.randint(raters, (batch,), generator=generator)
    onehot = nn.functional.one_hot(pick, raters).float()
    weights = torch.randint(1, 11, (batch, raters), generator=generator).float()
    return [onehot, weights / weights.sum(1, keepdim=True), torch.full((batch, raters), 1.0 / raters)]


def soft_target(masks: Tensor, expertise: Tensor) -> Tensor:
    """The c-weighted average of the raters' binary masks: ``masks (B, R, K, *S)``, ``expertise (B, R)`` ->
    ``(B, K, *S)``."""
    c = expertise.to(masks.dtype).reshape(*expertise.shape, *[1] * (masks.ndim - 2))
    return (c * masks).sum(1)


def rater_bce(recon_logits: Tensor, masks: Tensor) -> Tensor:
    """Mean over raters of the BCE of rater ``r``'s reconstruction against rater ``r``'s mask (both
    ``(B, R, K, *S)``)."""
    if recon_logits.shape != masks.shape:
        raise MedsslError(f"reconstructions {tuple(recon_logits.shape)} and masks {tuple(masks.shape)} differ")
    return torch.stack([bce(recon_logits[:, r], masks[:, r]) for r in range(masks.shape[1])]).mean()


def _weighted(losses: list[Tensor]) -> Tensor:
    return sum((w * loss for w, loss in zip(CONDITION_WEIGHTS, losses, strict=True)), torch.zeros(())) / sum(
        CONDITION_WEIGHTS
    )


class MRNetSegmentation(SupervisedSegmentation):
    """MRNet trained on the masks of several raters (``batch["target"]``: ``(B, R, *S)``, each rater's label map);
    see the module for the losses and the fixes. ``predict``/validation use the network's stored expertise vector
    (uniform unless set); validation Dice is against the raters' mean (``raters_mean_dice``).

    Args:
        network: an ``MRNet``.
        plan: the dataset plan (a label map with the rater names in ``plan.extra["raters"]``).
        inference_weight: weight of the coarse prediction's BCE in the inference loss (public code: 0.7).
        consistency_weight: weight of the consistency term (public code: 0.3).
        refine: with the reconstruction and perception modules (False: the conditioned U-Net alone, the
            ablation baseline).
        width: width of the perception module's features.
        blur_size: size of the perception module's learnable Gaussian (odd; public code 31, 2D).
        blur_sigma: its initial sigma (public code: 4).
        validate: the validation score, the one the plateau stop watches: ``raters-mean`` (the uniform vector
            against the raters' mean) or ``each-rater`` (the mean of that and, per rater, the
            rater's one-hot vector against that rater: the plateau then sees whether the conditioning is learned).
        settings: ``sw_overlap``, ``rotate_degrees``, ``scale_range``, ``affine_probability``, ``seed``: as
            ``SupervisedSegmentation``.
    """

    uses_raters = True  # fine-tuning passes every rater's mask as the target

    def __init__(
        self,
        network: nn.Module,
        plan: Plan,
        *,
        inference_weight: float = 0.7,
        consistency_weight: float = 0.3,
        validate: str = "raters-mean",
        **settings: Any,
    ) -> None:
        super().__init__(network, plan, **settings)
        if not isinstance(network, MRNet):
            raise MedsslError(f"the mrnet system needs an MRNet network, got {type(network).__name__}")
        if validate not in VALIDATION_SCORES:
            raise MedsslError(f"validate must be one of {', '.join(VALIDATION_SCORES)}, not {validate!r}")
        self.validate = validate
        self.inference_weight, self.consistency_weight = inference_weight, consistency_weight
        self.conditions = torch.Generator().manual_seed(int(settings.get("seed", 0)) + 1)

    @classmethod
    def for_run(
        cls,
        plan: Plan,
        cfg: FinetuneConfig,
        *,
        seed: int = 0,
        inference_weight: float = 0.7,
        consistency_weight: float = 0.3,
        refine: bool = True,
        width: int = 32,
        blur_size: int = 31,
        blur_sigma: float = 4.0,
        validate: str = "raters-mean",
    ) -> MRNetSegmentation:
        """The system ``medssl finetune --set system=mrnet`` trains (see the class)."""
        raters = plan_raters(plan)
        structures = plan.out_channels - 1
        if plan.task != "labelmap" or structures < 1:
            raise MedsslError("the mrnet system needs label-map masks with a foreground class (binary masks)")

        def encoder(extra: int) -> UNetEncoder:
            return UNetEncoder(plan.spatial_dims, plan.in_channels + extra, tuple(plan.channels))

        inference = ExpertiseUNet(encoder(0), structures, len(raters))
        reconstruction = ExpertiseUNet(encoder(structures), len(raters) * structures, len(raters)) if refine else None
        perception = (
            PerceptionModule(
                plan.spatial_dims, plan.channels[0], structures, width=width, blur_size=blur_size, blur_sigma=blur_sigma
            )
            if refine
            else None
        )
        network = MRNet(
            inference, reconstruction, perception, num_raters=len(raters), structures=structures, background_logit=True
        )
        weights = {"inference_weight": inference_weight, "consistency_weight": consistency_weight}
        return cls(network, plan, **weights, validate=validate, **cls.run_settings(cfg, seed))

    @property
    def mrnet(self) -> MRNet:
        """The network, typed."""
        assert isinstance(self.network, MRNet)
        return self.network

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        net = self.mrnet
        groups = {"inference": list(net.inference.parameters())}
        if net.reconstruction is not None and net.perception is not None:
            groups["reconstruction"] = list(net.reconstruction.parameters())
            groups["perception"] = list(net.perception.parameters())
        return groups

    def rater_masks(self, target: Tensor) -> Tensor:
        """Each rater's label map ``(B, R, *S)`` as binary masks per foreground class, ``(B, R, K, *S)``."""
        if target.shape[1] != self.mrnet.num_raters:
            raise MedsslError(f"the target holds {target.shape[1]} raters' masks, the network {self.mrnet.num_raters}")
        k = self.mrnet.structures
        return nn.functional.one_hot(target.long(), k + 1).movedim(-1, 2)[:, :, 1:].float()

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """The three groups' losses (see the module) and, logged only, ``loss``: their sum."""
        x, target = self.augment(batch[IMAGE], batch[TARGET])
        masks = self.rater_masks(target)
        net = self.mrnet
        conditions = [c.to(x.device) for c in draw_conditions(x.shape[0], net.num_raters, self.conditions)]
        inference, recon, perception = [], [], []
        for c in conditions:
            logits, features = net.inference(x, c)
            truth = soft_target(masks, c)
            inference.append(bce(logits, truth))
            if net.perception is not None:
                rebuilt, _ = net.reconstruct(x, torch.sigmoid(logits.detach()), c)
                recon.append(rater_bce(rebuilt, masks))
                refined = net.perception(rebuilt.detach(), features.detach(), logits.detach())  # its own condition's
                perception.append(bce(refined, truth))
        main = self.inference_weight * _weighted(inference)
        if net.perception is None:
            return {"loss": main}
        uniform = conditions[2]
        # logits: the last condition's, the uniform one
        main = main + self.consistency_weight * self._consistency(x, logits, soft_target(masks, uniform), uniform)
        losses = {"inference": main, "reconstruction": torch.stack(recon).mean(), "perception": _weighted(perception)}
        return {**losses, "loss": torch.stack([v.detach() for v in losses.values()]).sum()}

    def _consistency(self, x: Tensor, logits: Tensor, truth: Tensor, expertise: Tensor) -> Tensor:
        """Mean squared difference, over every feature axis, of the reconstruction network's features given the
        coarse probabilities and given the soft target (both probabilities; the uniform condition)."""
        predicted = self.mrnet.reconstruct(x, torch.sigmoid(logits), expertise)[1]
        with torch.no_grad():
            wanted = self.mrnet.reconstruct(x, truth, expertise)[1]
        return (predicted - wanted).pow(2).mean()

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """``{"dice": mean foreground Dice}`` of one whole case with the stored vector against the raters' mean
        (``raters_mean_dice``); with ``validate="each-rater"`` averaged with each rater's one-hot vector against that
        rater."""
        image, raters = batch[IMAGE][0], batch[TARGET][0]
        logits = predict_logits(self.network, image, self.plan, overlap=self.sw_overlap)
        scores = [raters_mean_dice(logits, raters).nanmean()]
        if self.validate == "each-rater":
            net, stored = self.mrnet, self.mrnet.expertise.clone()
            try:
                for r, onehot in enumerate(torch.eye(net.num_raters)):
                    net.set_expertise(onehot)
                    logits = predict_logits(net, image, self.plan, overlap=self.sw_overlap)
                    scores.append(raters_mean_dice(logits, raters[r : r + 1]).nanmean())
            finally:
                net.set_expertise(stored)  # the vector predict uses (kept in checkpoints)
        return {"dice": torch.stack(scores).nanmean()}


def raters_mean_dice(logits: Tensor, raters: Tensor) -> Tensor:
    """Dice per foreground class of one image's label-map logits ``(K + 1, *S)`` (softmax > 0.5) against the
    raters' mean (> 0.5, as the public code and ``medssl.metrics.rater_dice``: with two raters, their
    intersection) of their label maps ``(R, *S)``; NaN where both are empty."""
    k = logits.shape[0]
    masks = nn.functional.one_hot(raters.long(), k).movedim(-1, 1)[:, 1:].float()  # (R, K, *S)
    truth = masks.mean(0) > 0.5
    pred = torch.softmax(logits, 0)[1:] > 0.5
    return dice_scores(pred, truth, spatial_dims=truth.ndim - 1, empty=float("nan"))


def plan_raters(plan: Plan) -> list[str]:
    """The raters' names a plan records (``plan.extra["raters"]``, from a dataset with several observers).

    Raises:
        MedsslError: fewer than two raters.
    """
    raters = list(plan.extra.get("raters") or [])
    if len(raters) < 2:
        raise MedsslError(
            "the mrnet system needs a dataset with several raters (one mask folder per rater, e.g. masks/<rater>/ "
            "or 1st_manual/ and 2nd_manual/; see `medssl data check`)"
        )
    return raters


registry.register_object(
    "segmentation",
    "mrnet",
    MRNetSegmentation,
    description="MRNet (several raters): expertise-conditioned U-Net, rater reconstruction and disagreement "
    "attention; calibrated output for any rater weighting",
)
