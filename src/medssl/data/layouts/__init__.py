"""Finding the cases of a dataset on disk, whatever its layout.

Supported layouts, detected in this order:
- ``"msd"``: Medical Segmentation Decathlon / nnU-Net folder with ``imagesTr/``, ``dataset.json`` and
  (optionally) ``labelsTr/``; MSD style (``case.nii.gz``, 4D for several modalities) and nnU-Net style
  (``case_0000.nii.gz``, ``case_0001.nii.gz``; ``channel_names``/``labels`` name->value, ``file_ending``).
  ``imagesTs/`` cases (no labels) are listed in ``DatasetIndex.test_cases``. A missing ``dataset.json`` is
  reported as a problem (labels then stay undeclared).
- ``"paired"``: ``images/`` + ``masks/`` holding mask files, matched by file stem (suffixes may differ, e.g.
  .jpg + .png; a mask may also carry a ``_mask``/``_seg``/``_label``/``_segmentation`` suffix).
- ``"paired-multilabel"``: ``images/`` + ``masks/<structure>/`` sub-folders, one binary mask per structure
  per image (overlapping structures, e.g. JSRT lungs/heart/clavicles).
- ``"observers"``: ``images/`` + one folder per human observer (rater) + optionally a field-of-view folder, as DRIVE
  (``images/``, ``1st_manual/``, ``2nd_manual/``, ``mask/``) and STARE (``images/``, ``labels-ah/``, ``labels-vk/``,
  ``fov/``). Observer folders are named ``<n>st_manual``/``<n>nd_manual``/... , ``manual<x>``,
  ``labels-<x>``/``labels_<x>``, ``observer<x>``, ``rater<x>``, ``annotator<x>`` or ``grader<x>``; or any names as
  ``masks/<rater>/`` when a ``dataset.json`` declares them, ``{"raters": ["alice", "bob"]}`` (in that order). The
  label is the FIRST observer: ordered by the number in the name (``1st`` before ``2nd``), then by name (``labels-ah``
  before ``labels-vk``); every observer's mask stays in ``Case.observers`` (for multi-rater use) and the folder names
  in ``DatasetIndex.observers``. Field-of-view folders (``fov``, ``roi``, ``field_of_view``, ``mask`` singular) go to
  ``Case.fov``: neither labels nor images. A mask matches an image by equal stem, the image stem plus a mask suffix,
  or else by the first ``_``/``-``-separated token when that token is unique on both sides (DRIVE's
  ``21_training.tif`` + ``21_manual1.gif`` + ``21_training_mask.gif``).
- ``"case-folders"``: one folder per case (BraTS): each holds the channel images, ONE label file named like a
  label (stem ``seg``, ``label``, ``labels``, ``segmentation``, ``gt``, ``truth``, ``OTMultiClass`` or ending
  in ``_seg``, ``-label``, ...) and optionally a brain/field-of-view mask (``brainmask``, ``brain_mask``,
  ``fov``, ``roi``), which is not an image. The channel files are ordered by channel name: the stem without
  a leading ``<case folder name>_``, alphabetically (BraTS 2015: ``Flair_subtrMeanDivStd``, then
  ``T1c_subtrMeanDivStd``); every case must have the same channel names (``DatasetIndex.channels``). Detected
  when the folder has no image of its own and at least half of its sub-folders are such case folders (the
  others are reported).
- ``"suffix"``: masks beside images with a suffix, ``x.tif`` + ``x_mask.tif`` (also ``_seg``, ``_label``).
- Split folders: a folder without images whose sub-folders are each a labelled dataset of one of the layouts
  above (DRIVE's ``training/`` + ``test/``, BraTS's ``train/`` + ``validation/`` + ``test/``) gives one index
  with their cases together (case ids must be unique), the layout of the parts, and ``DatasetIndex.parts``.
- ``"unlabelled"``: a folder of images or volumes (or DICOM series folders), searched one level deep. When the
  folder has an ``images/`` sub-folder only that one is used; a sub-folder that has its own ``images/``
  contributes that.

``Case``: ``case_id`` (stem; the folder name for case-folders), ``images`` (one path per channel file, usually
one), ``label`` (label-map path or None), ``structures`` (structure name -> binary mask path, for
paired-multilabel; else None), ``observers`` (observer folder name -> mask path, observers layout), ``fov``
(field-of-view or brain mask path, or None).

``DatasetIndex``: ``root``, ``layout``, ``cases`` (sorted by case_id), ``labels`` (declared value -> name
from dataset.json, or None when not declared), ``structures`` (sorted structure names for
paired-multilabel, else None), ``modality`` (dataset.json's first modality/channel name, e.g. "CT", "MRI",
or None), ``problems`` (human-readable strings found while pairing: image without mask, mask without image,
duplicate stems, structure sub-folder missing a mask, empty structure folder; each names the files, relative
to ``root``; they make ``finetune`` refuse the dataset), ``test_cases``, ``observers``, ``channels``, ``parts``
(see the layouts above), ``notes`` (facts worth telling that are not problems: which observer is the label,
the field-of-view masks, merged split folders) and ``unrecognised`` (files under ``root`` that no case uses
and that are neither a supported image nor a documentation file such as ``README.txt`` or ``dataset.json``,
e.g. ``case.nii.txt``; ``data check`` lists them). ``has_labels`` property: True when the cases carry labels
or structures.

``discover(path) -> DatasetIndex``: raises ``MedsslError`` when ``path`` is missing, is an empty folder, holds
no supported image, or no usable case could be formed (the message then lists the pairing problems). Other
pairing problems do not raise: they go into ``problems`` and the unpaired images are left out of ``cases`` for
labelled layouts. A single image file or DICOM series folder gives a one-case unlabelled index.

``scan_dataset(path) -> DatasetIndex``: like ``discover`` but returns an index without usable cases instead of
raising (``medssl.data.check`` reports the problems).

``discover_inputs(path) -> list[Path]``: the image inputs for prediction/segmentation: a single file, a DICOM
series folder, or every supported image (and DICOM series folder) in a folder (and its ``images/`` or
``imagesTs/`` sub-folder if the folder is a dataset root). Raises ``MedsslError`` when nothing is found, or
when the folder holds one folder per case (use ``discover_input_cases``).

``discover_input_cases(path) -> list[Case]``: like ``discover_inputs`` but one case per input, so that the
channel files of a case-folders case (or one such case folder) stay together as one multi-channel input.

``unrecognised_warning(index) -> str | None``: one line naming ``index.unrecognised`` (printed by ``finetune``).

Hidden files (names starting with ``.``, e.g. macOS ``._case.nii.gz`` in the MSD archives) are ignored.

Modules: ``index`` (``Case``, ``DatasetIndex``), one per layout (``msd``, ``paired``, ``observers``,
``case_folders``, ``suffix``, ``unlabelled``), ``pairing`` (images and masks by stem), ``scan`` (detection,
``discover``, split folders), ``inputs`` (prediction inputs).
"""

from medssl.data.layouts.index import LAYOUTS, Case, DatasetIndex, Layout
from medssl.data.layouts.inputs import discover_input_cases, discover_inputs
from medssl.data.layouts.pairing import MASK_SUFFIXES
from medssl.data.layouts.scan import detect_layout, discover, scan_dataset, unrecognised_warning

__all__ = [
    "LAYOUTS",
    "MASK_SUFFIXES",
    "Case",
    "DatasetIndex",
    "Layout",
    "detect_layout",
    "discover",
    "discover_input_cases",
    "discover_inputs",
    "scan_dataset",
    "unrecognised_warning",
]
