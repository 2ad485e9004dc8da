import torch

from medssl.segment.losses import SegmentationLoss


def _naive_dice_loss(prob, onehot):
    inter = (prob * onehot).sum()
    return 1 - (2 * inter + 1e-5) / (prob.sum() + onehot.sum() + 1e-5)


def test_labelmap_loss_matches_naive_batch_dice_plus_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 1, 5, 6))
    prob = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    dice = torch.stack([_naive_dice_loss(prob[:, c], onehot[:, c]) for c in range(3)]).mean()
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    torch.testing.assert_close(SegmentationLoss(multilabel=False)(logits, target), dice + ce)


def test_multilabel_loss_is_sigmoid_per_structure():
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 4, 4, 4)
    target = torch.randint(0, 2, (2, 2, 4, 4, 4)).float()
    prob = logits.sigmoid()
    dice = torch.stack([_naive_dice_loss(prob[:, c], target[:, c]) for c in range(2)]).mean()
    bce = torch.nn.functional.binary_cross_entropy(prob, target)
    torch.testing.assert_close(SegmentationLoss(multilabel=True)(logits, target), dice + bce, rtol=1e-4, atol=1e-5)


def test_perfect_multilabel_prediction_has_low_loss():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, :4] = 1
    target[0, 1, 2:6] = 1  # overlaps structure 0
    logits = (target * 2 - 1) * 20
    assert SegmentationLoss(multilabel=True)(logits, target) < 1e-3
