"""The segmentation systems, registered by name in one place (``medssl.registry`` kind ``"segmentation"``).

``supervised`` is what ``medssl finetune`` trains (``SupervisedSegmentation``, a ``medssl.systems.System``). A
new segmentation system registers its class where it is defined and is imported here, so that ``medssl list``
and ``registry.get("segmentation", ...)`` find it.
"""

from medssl import registry
from medssl.segment.supervised import SupervisedSegmentation

registry.register_object(
    "segmentation",
    "supervised",
    SupervisedSegmentation,
    description="supervised fine-tuning on labelled patches: Dice + cross-entropy, affine augmentation, "
    "sliding-window validation (medssl finetune)",
)
