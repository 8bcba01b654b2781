"""Label handling of the text losses: graded scores, 0/1 labels, and the in-batch ranking loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siamkit.errors import DataError
from siamkit.heads import CosineHead
from siamkit.losses import build_loss
from siamkit.siamese import SiameseNetwork
from siamkit.text_losses import CoSENTLoss, CosineRegressionLoss, binarize
from siamkit.training import batch_loss


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


E1 = unit([1.0, 0.0], [1.0, 0.0], [1.0, 0.0])
E2 = unit([1.0, 0.0], [1.0, 1.0], [0.0, 1.0])  # cosines 1, 0.707, 0


def test_cosine_regression_targets_score_over_max():
    loss = CosineRegressionLoss(max_score=5.0)
    assert loss(E1, E2, torch.tensor([5.0, 5 * 2**-0.5, 0.0])) < 1e-10  # exact fit
    assert loss(E1, E2, torch.tensor([0.0, 0.0, 5.0])) > 0.5  # scores reversed: large error
    same = CosineRegressionLoss(max_score=1.0)(E1, E2, torch.tensor([1.0, 2**-0.5, 0.0]))
    assert same < 1e-10  # 0/1-scale labels with max_score=1


def test_cosent_depends_only_on_the_order_of_scores():
    loss = CoSENTLoss(scale=20.0)
    right = loss(E1, E2, torch.tensor([5.0, 3.0, 0.0]))
    assert right == pytest.approx(loss(E1, E2, torch.tensor([4.0, 2.0, 1.0])).item())
    wrong = loss(E1, E2, torch.tensor([0.0, 3.0, 5.0]))
    assert right < 0.01 < 10 < wrong
    assert loss(E1, E2, torch.full((3,), 2.5)) == 0  # nothing to rank


@pytest.mark.parametrize("loss", [CosineRegressionLoss(), CoSENTLoss()])
def test_scored_losses_reject_bad_scores(loss):
    with pytest.raises(DataError, match=r"scores in \[0, 5.0\]"):
        loss(E1, E2, torch.tensor([6.0, 1.0, 1.0]))
    with pytest.raises(DataError, match=r"scores in \[0, 5.0\]"):
        loss(E1, E2, torch.tensor([-1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="expected 3 scores"):
        loss(E1, E2, torch.tensor([1.0, 1.0]))
    with pytest.raises(DataError, match="one shape"):
        loss(E1, E2[:2], torch.tensor([1.0, 1.0, 1.0]))


def test_binarize_keeps_one_for_same():
    assert binarize(torch.tensor([0.0, 3.99, 4.0, 5.0]), 4.0).tolist() == [0, 0, 1, 1]


def test_scored_losses_are_registered_pair_losses_fed_by_the_trainer():
    net = SiameseNetwork(torch.nn.Linear(2, 2), CosineHead())
    loss = build_loss({"name": "cosent", "params": {"max_score": 1.0}}, net)
    assert loss.kind == "pair" and loss.max_score == 1.0
    value = batch_loss(net, loss, (E1, E2, torch.tensor([1.0, 0.5, 0.0])))
    assert value.ndim == 0 and torch.isfinite(value)
    assert build_loss({"name": "cosine_regression"}, net).max_score == 5.0


def test_zero_one_losses_reject_graded_scores_and_rank_positives():
    net = SiameseNetwork(torch.nn.Identity(), CosineHead())
    ranking = build_loss({"name": "ranking"}, net)
    with pytest.raises(DataError, match="0 .different. or 1 .same."):
        ranking(E1, E2, torch.tensor([4.2, 1.0, 0.0]))  # STS scores must be binarised first
    with pytest.raises(DataError, match="at least one positive"):
        ranking(E1, E2, torch.zeros(3))
    anchors, partners = unit([1.0, 0.0], [0.0, 1.0]), unit([1.0, 0.1], [0.1, 1.0])
    good = ranking(anchors, partners, torch.ones(2))
    bad = ranking(anchors, partners.flip(0), torch.ones(2))
    assert good < bad
    contrastive = build_loss({"name": "contrastive", "params": {"margin": 1.0}}, net)
    with pytest.raises(DataError):
        contrastive(E1, E2, torch.tensor([5.0, 3.0, 0.0]))
    assert contrastive(E1, E1, binarize(torch.tensor([5.0, 4.5, 4.0]), 4.0)) < 1e-12
