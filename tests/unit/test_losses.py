"""Every loss against a value computed by hand, and the label conventions."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.encoders import build_encoder
from siamkit.errors import ConfigError, DataError
from siamkit.heads import HEADS
from siamkit.losses import build_loss
from siamkit.siamese import SiameseNetwork

E1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
E2 = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]])  # distances 5, 1, sqrt(2)


def network(head: str = "euclidean") -> SiameseNetwork:
    encoder = build_encoder({"name": "mlp", "params": {"in_features": 2, "embedding_dim": 2}})
    params = {"embedding_dim": 2} if head == "learned" else {}
    return SiameseNetwork(encoder, HEADS.build({"name": head, "params": params}))


def loss(name: str, head: str = "euclidean", **params):
    return build_loss({"name": name, "params": params}, network(head))


def test_contrastive_is_hadsell_with_margin_two():
    y = torch.tensor([1.0, 0.0, 0.0])
    # same: 5^2 = 25; different at d=1: (2-1)^2 = 1; different at d=sqrt2: (2-sqrt2)^2
    expected = 0.5 * (25 + 1 + (2 - math.sqrt(2)) ** 2) / 3
    assert loss("contrastive")(E1, E2, y).item() == pytest.approx(expected, rel=1e-5)
    # A different pair beyond the margin costs nothing.
    assert loss("contrastive", margin=4.0)(E1[:1], E2[:1], torch.tensor([0.0])).item() == 0


def test_bce_on_learned_head_with_and_without_l2():
    bce = loss("bce", head="learned")
    head = bce.head
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, -1.0]]))
        head.linear.bias.fill_(0.5)
    y = torch.tensor([1.0, 0.0, 1.0])
    logits = [(3 - 4) + 0.5, (1 - 0) + 0.5, (1 - 1) + 0.5]
    expected = (
        -(
            math.log(1 / (1 + math.exp(-logits[0])))
            + math.log(1 - 1 / (1 + math.exp(-logits[1])))
            + math.log(1 / (1 + math.exp(-logits[2])))
        )
        / 3
    )
    assert bce(E1, E2, y).item() == pytest.approx(expected, rel=1e-5)
    regularised = build_loss({"name": "bce", "params": {"l2": 0.01}}, bce_net := network("learned"))
    with torch.no_grad():
        bce_net.head.linear.weight.copy_(head.linear.weight)
        bce_net.head.linear.bias.copy_(head.linear.bias)
    penalty = 0.01 * sum(p.pow(2).sum() for p in bce_net.encoder.parameters() if p.ndim > 1)
    assert regularised(E1, E2, y).item() == pytest.approx(expected + penalty.item(), rel=1e-5)


def test_bce_needs_the_learned_head():
    with pytest.raises(ConfigError, match="learned"):
        loss("bce", head="euclidean")


def test_cosine_embedding_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # cosines 1/sqrt2, 0, 1/sqrt2
    y = torch.tensor([1.0, 0.0, 0.0])
    # same: 1 - 1/sqrt2; different: max(0, cos - 0) = 0 and 1/sqrt2
    assert loss("cosine_embedding")(a, b, y).item() == pytest.approx(1 / 3, rel=1e-5)
    assert loss("cosine_embedding", margin=0.5)(a[2:], b[2:], y[2:]).item() == (
        pytest.approx(1 / math.sqrt(2) - 0.5, rel=1e-5)
    )


def test_triplet_margin_by_hand():
    a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 5.5]])
    assert loss("triplet", margin=1.0)(a, p, n).item() == pytest.approx(5 - 5.5 + 1, rel=1e-5)
    assert loss("triplet", margin=0.2)(a, p, n).item() == 0


def test_in_batch_ranking_by_hand_and_ignores_negatives():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1.0, 1.0, 0.0])
    # positives: rows 0 and 1; logits = 20 * cos: [[20, 20*0? ]] -> row0: [20, 20], row1: [0, 0]
    logits = torch.tensor([[20.0, 20.0], [0.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item()
    assert loss("ranking")(a, b, y).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(DataError, match="positive"):
        loss("ranking")(a, b, torch.zeros(3))


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard", "all"])
def test_mined_triplet_uses_the_batch_labels(mining):
    mined = loss("mined_triplet", margin=1.0, mining=mining)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    # Labels matching the geometry: every negative is far beyond the margin, zero loss ...
    assert mined(emb, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(0.0, abs=1e-6)
    # ... and a positive loss when the labels contradict it.
    assert mined(emb, torch.tensor([0, 0, 1, 1])).item() > 0.5


def test_batch_hard_by_hand_on_normalised_embeddings():
    mined = loss("mined_triplet", margin=1.0, mining="batch_hard")
    # Distances are taken between L2-normalised embeddings (pytorch-metric-learning's LpDistance).
    emb = torch.tensor([[5.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Every anchor: hardest positive at distance 2, hardest negative at sqrt(2).
    assert mined(emb, labels).item() == pytest.approx(2 - math.sqrt(2) + 1, rel=1e-4)


def test_pair_labels_are_checked():
    with pytest.raises(DataError, match="0 \\(different\\) or 1"):
        loss("contrastive")(E1, E2, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(DataError, match="shape"):
        loss("contrastive")(E1, E2, torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="mining"):
        loss("mined_triplet", mining="hardest")


@pytest.mark.parametrize("name", ["cosface", "arcface", "normalized_softmax", "proxy_anchor"])
def test_proxy_losses_pull_embeddings_to_their_class_proxy(name):
    proxy = build_loss({"name": name}, network(), num_classes=3)
    assert proxy.kind == "labelled" and sum(p.numel() for p in proxy.parameters()) == 3 * 2
    angles = torch.tensor([0.0, 2.0, 4.0]) * math.pi / 3
    at_own = torch.stack([angles.cos(), angles.sin()], dim=1)  # 3 unit vectors, 120° apart
    with torch.no_grad():
        proxies = next(proxy.parameters())  # (dim, classes) or (classes, dim)
        proxies.copy_(at_own.T if proxies.shape == (2, 3) else at_own)
    labels = torch.tensor([0, 1, 2])
    assert proxy(at_own, labels).item() < proxy(at_own, torch.tensor([1, 2, 0])).item()
    with pytest.raises(DataError, match="0..2"):
        proxy(at_own, torch.tensor([0, 1, 3]))


def test_proxy_losses_need_the_number_of_classes():
    with pytest.raises(ConfigError, match="num_classes"):
        build_loss({"name": "cosface"}, network())
    assert build_loss({"name": "cosface", "params": {"num_classes": 5}}, network()).num_classes == 5


def test_a_recipe_proxy_loss_gets_one_proxy_per_training_label(blobs):
    from siamkit.recipe import build_network, build_recipe_loss, parse_recipe

    recipe = parse_recipe({
        "data": {"name": "digits"}, "loss": {"name": "cosface"},
        "encoder": {"name": "mlp", "params": {"in_features": 8, "embedding_dim": 4}},
    }, "inline")  # fmt: skip
    network, _ = build_network(recipe)
    assert build_recipe_loss(recipe, network, blobs.labels).num_classes == 6  # labels 0..5
