"""The twin network: weight sharing, heads, encoders built by name, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siamkit.encoders import ENCODERS, build_encoder
from siamkit.errors import ConfigError, DataError
from siamkit.heads import HEADS
from siamkit.siamese import SiameseNetwork


def mlp_network(head: str = "euclidean") -> SiameseNetwork:
    encoder = build_encoder({"name": "mlp", "params": {"in_features": 8, "hidden": [16],
                                                       "embedding_dim": 4}})  # fmt: skip
    params = {"embedding_dim": 4} if head == "learned" else {}
    return SiameseNetwork(encoder, HEADS.build({"name": head, "params": params}))


def test_one_parameter_set_gets_gradients_from_both_branches():
    net = mlp_network()
    encoder_params = list(net.encoder.parameters())
    assert len(list(net.parameters())) == len(encoder_params)  # no second copy of the encoder
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    for branch in (0, 1):
        net.zero_grad()
        net(a, b)[branch].pow(2).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder_params)
    # The same input through either branch gives the same embedding.
    ea, eb = net(a, a.clone())
    assert torch.allclose(ea, eb)


def test_triplets_share_the_encoder():
    net = mlp_network()
    x = torch.randn(3, 8)
    a, p, n = net(x, x, x)
    assert torch.allclose(a, p) and torch.allclose(p, n)


def test_heads_score_higher_for_more_similar():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    euclid = HEADS.build({"name": "euclidean"})
    assert torch.allclose(euclid(a, b), torch.tensor([-5.0, 0.0]))
    cosine = HEADS.build({"name": "cosine"})
    assert cosine(a[1:], b[1:]).item() == pytest.approx(1.0)
    learned = HEADS.build({"name": "learned", "params": {"embedding_dim": 2}})
    s = learned(a, b)
    assert torch.all((s > 0) & (s < 1))
    assert torch.allclose(s, torch.sigmoid(learned.logits(a, b)))


@pytest.mark.parametrize("head", ["euclidean", "cosine", "learned"])
def test_pairwise_matches_forward(head):
    net = mlp_network(head).eval()
    q, r = torch.randn(3, 4), torch.randn(5, 4)
    grid = net.head.pairwise(q, r)
    direct = torch.stack([net.head(q[i].expand(5, 4), r) for i in range(3)])
    assert torch.allclose(grid, direct, atol=1e-5)


@pytest.mark.parametrize(
    "name, params, shape",
    [
        ("conv4", {"input_size": 28}, (2, 1, 28, 28)),
        ("koch", {"width": 0.25}, (2, 1, 105, 105)),
        ("signet", {"width": 0.25, "input_size": [64, 96]}, (2, 1, 64, 96)),
        ("resnet18", {"in_channels": 1, "embedding_dim": 32, "small_input": True}, (2, 1, 32, 32)),
        ("conv1d", {"in_channels": 3, "embedding_dim": 16}, (2, 3, 50)),
    ],
)
def test_encoders_by_name_give_declared_embedding_size(name, params, shape):
    encoder = build_encoder({"name": name, "params": params}).eval()
    out = encoder(torch.rand(shape))
    assert out.shape == (shape[0], encoder.embedding_dim)
    assert torch.isfinite(out).all()


def test_conv4_is_the_published_architecture():
    encoder = build_encoder({"name": "conv4", "params": {"input_size": 28}})
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(64, (3, 3))] * 4
    assert encoder.embedding_dim == 64  # 28 -> 14 -> 7 -> 3 -> 1


def test_signet_layers_follow_dey_et_al():
    encoder = build_encoder({"name": "signet", "params": {"input_size": [155, 220]}})
    convs = [(m.out_channels, m.kernel_size) for m in encoder.modules()
             if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    assert convs == [(96, (11, 11)), (256, (5, 5)), (384, (3, 3)), (256, (3, 3))]
    assert any(isinstance(m, torch.nn.LocalResponseNorm) for m in encoder.modules())
    assert encoder.embedding_dim == 128


def test_bad_inputs_raise_clear_errors():
    encoder = build_encoder({"name": "conv4", "params": {"input_size": 28}})
    with pytest.raises(DataError, match="rank 4"):
        encoder(torch.rand(28, 28))
    with pytest.raises(DataError, match="channel"):
        encoder(torch.rand(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="unknown encoder 'nope'"):
        build_encoder({"name": "nope"})
    with pytest.raises(ConfigError, match="bad params"):
        build_encoder({"name": "conv4", "params": {"colour": True}})
    assert {"conv4", "koch", "signet", "resnet18", "resnet34", "resnet50", "mlp"} <= set(
        ENCODERS.names()
    )
    with pytest.raises(DataError, match="one shape"):
        HEADS.build({"name": "euclidean"})(torch.rand(2, 4), torch.rand(3, 4))


def test_normalized_embeddings_are_unit_length():
    encoder = build_encoder({"name": "mlp", "params": {"in_features": 8, "embedding_dim": 4,
                                                       "normalize": True}})  # fmt: skip
    assert torch.allclose(F.normalize(encoder(torch.randn(3, 8)), dim=1).norm(dim=1),
                          torch.ones(3))  # fmt: skip
