"""The contract every trainable system implements (``System``) and the named fields of its batches."""

from medssl.systems.base import BATCH_FIELDS, IMAGE, TARGET, UNLABELLED, Batch, System, as_batch

__all__ = ["BATCH_FIELDS", "IMAGE", "TARGET", "UNLABELLED", "Batch", "System", "as_batch"]
