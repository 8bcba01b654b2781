"""Signatures: SigNet preprocessing, the writer-disjoint protocol, pairs, reference-set scoring,
the ``siamkit eval`` evaluator and ``siamkit verify --references`` (synthetic images, fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from siamkit.cli import main
from siamkit.data.signature_preprocess import SignaturePreprocess
from siamkit.data.signatures import (
    SignaturePairBatches,
    read_signature_tree,
    signature_labelled,
    signature_pairs,
    writer_folds,
)
from siamkit.data.transforms import build_preprocessor
from siamkit.errors import DataError
from siamkit.evaluation.reference_set import (
    aggregate_scores,
    choose_reference_thresholds,
    normalised_aggregates,
    reference_scores,
    reference_trials,
    saved_reference_threshold,
    score_against_references,
    trial_scores,
)
from siamkit.heads import EuclideanHead

WRITERS = [f"{i:03d}" for i in range(1, 7)]
N_GENUINE, N_FORGED = 7, 3
SIZE = (64, 96)


def _stroke_image(rng: np.random.Generator, points: np.ndarray, jitter: float) -> Image.Image:
    image = Image.new("L", (200, 80), 235)  # a light grey page
    moved = points + rng.normal(0, jitter, points.shape)
    ImageDraw.Draw(image).line([tuple(p) for p in moved], fill=30, width=3)
    return image


def write_tree(root: Path, seed: int = 0) -> Path:
    """Six writers: genuine images jitter one writer-specific stroke; forgeries another."""
    rng = np.random.default_rng(seed)
    for writer in WRITERS:
        own = rng.uniform([20, 10], [180, 70], (6, 2))
        fake = own + rng.normal(0, 12, own.shape)
        (root / "genuine" / writer).mkdir(parents=True)
        (root / "forged" / writer).mkdir(parents=True)
        for i in range(N_GENUINE):
            _stroke_image(rng, own, 1.5).save(root / "genuine" / writer / f"{writer}_{i:02d}.png")
        for i in range(N_FORGED):
            _stroke_image(rng, fake, 1.5).save(
                root / "forged" / writer / f"{i:02d}_0999{writer}.png"
            )
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("signatures"))


# --- preprocessing ---------------------------------------------------------------------------


def _signature_array(height: int = 120, width: int = 300) -> np.ndarray:
    page = np.full((height, width), 240, np.uint8)
    page[height // 3 : height // 3 + 4, width // 5 : width // 2] = 20  # a stroke off-centre
    return page


def test_preprocess_centres_ink_and_inverts():
    out = SignaturePreprocess(SIZE, canvas=(128, 192))([_signature_array()])
    assert out.shape == (1, 1, *SIZE) and out.dtype == torch.float32
    image = out[0, 0]
    assert float(image.min()) == 0.0 and float(image.max()) > 0.5  # bright ink, zero background
    rows, cols = torch.nonzero(image > 0.1, as_tuple=True)
    assert abs(rows.float().mean() - SIZE[0] / 2) < 4 and abs(cols.float().mean() - SIZE[1] / 2) < 4
    corner = image[:5, :5]
    assert float(corner.abs().max()) == 0.0  # the light page became background


def test_preprocess_blank_and_black_images_are_clear_errors():
    pre = SignaturePreprocess(SIZE)
    with pytest.raises(DataError, match="no ink"):
        pre([np.full((100, 200), 255, np.uint8)])
    with pytest.raises(DataError, match="every pixel has value 0"):
        pre([np.zeros((100, 200), np.uint8)])


def test_preprocess_tiny_huge_and_bad_inputs():
    pre = SignaturePreprocess(SIZE)
    with pytest.raises(DataError, match="too small"):
        pre([_signature_array(5, 40)])
    huge = np.asarray(Image.fromarray(_signature_array()).resize((4000, 1600)))
    assert pre([huge]).shape == (1, 1, *SIZE)
    with pytest.raises(DataError, match="uint8"):
        pre([_signature_array().astype(np.float32)])
    with pytest.raises(DataError, match="empty list"):
        pre([])
    with pytest.raises(DataError, match="file path, PIL image or uint8 array"):
        pre([42])


def test_preprocess_colour_and_rgba_match_grey(tmp_path):
    grey = _signature_array()
    pre = SignaturePreprocess(SIZE)
    expected = pre([grey])
    rgb = Image.fromarray(np.stack([grey] * 3, -1))
    rgb.save(tmp_path / "colour.png")
    assert torch.allclose(pre([tmp_path / "colour.png"]), expected, atol=1e-2)
    rgba = np.zeros((*grey.shape, 4), np.uint8)  # transparent page, opaque dark ink
    rgba[grey < 128] = (20, 20, 20, 255)
    out = pre([Image.fromarray(rgba, "RGBA")])
    assert torch.equal(out > 0.3, expected > 0.3)


def test_preprocess_unreadable_file_names_it(tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="scan.png"):
        SignaturePreprocess(SIZE)([bad])


def test_preprocess_spec_rebuilds_the_same_steps():
    pre = SignaturePreprocess(SIZE, canvas=(128, 192), mean=0.1, std=0.5)
    rebuilt = build_preprocessor(pre.spec)
    image = _signature_array()
    assert torch.equal(rebuilt([image]), pre([image]))


# --- tree, folds and pairs -------------------------------------------------------------------


def test_read_tree_and_bad_layout(tree, tmp_path):
    data = read_signature_tree(tree)
    assert data.writer_ids() == WRITERS
    assert len(data) == len(WRITERS) * (N_GENUINE + N_FORGED)
    assert all(len(data.forged_of(w)) == N_FORGED for w in WRITERS)
    with pytest.raises(DataError, match="genuine"):
        read_signature_tree(tmp_path)


def test_writer_folds_never_share_a_writer():
    writers = [f"w{i}" for i in range(54)]
    folds = writer_folds(writers, n_folds=5, n_val=8, seed=3)
    tested = []
    for fold in folds:
        parts = [set(fold.train), set(fold.val), set(fold.test)]
        assert sum(map(len, parts)) == 54 and len(set.union(*parts)) == 54
        assert len(fold.val) == 8
        tested += fold.test
    assert sorted(tested) == sorted(writers)  # each writer is tested in exactly one fold
    assert writer_folds(writers, 5, 8, 3) == folds  # seeded
    assert writer_folds(writers, 5, 8, 4) != folds
    with pytest.raises(DataError, match="n_folds"):
        writer_folds(writers[:5], n_folds=5, n_val=8)


def test_pair_labels_follow_signet(tree):
    data = read_signature_tree(tree)
    writers = WRITERS[:4]
    pairs = signature_pairs(data, writers, seed=0)
    first_w, second_w = data.writers[pairs.first], data.writers[pairs.second]
    assert set(first_w) | set(second_w) <= set(writers)
    assert not data.forged[pairs.first].any()  # the first image is always a genuine reference
    genuine = pairs.kinds == "genuine"
    assert (pairs.labels[genuine] == 1).all() and (pairs.labels[~genuine] == 0).all()
    assert (first_w[genuine] == second_w[genuine]).all() and not data.forged[
        pairs.second[genuine]
    ].any()
    skilled = pairs.kinds == "skilled"
    assert (first_w[skilled] == second_w[skilled]).all() and data.forged[
        pairs.second[skilled]
    ].all()
    random = pairs.kinds == "random"
    assert (first_w[random] != second_w[random]).all() and not data.forged[
        pairs.second[random]
    ].any()
    n = len(writers)
    assert genuine.sum() == n * N_GENUINE * (N_GENUINE - 1) // 2
    assert skilled.sum() == n * N_GENUINE * N_FORGED
    with pytest.raises(DataError, match="at least 2 writers"):
        signature_pairs(data, WRITERS[:1])


def test_pair_batches_mix_and_shapes(tree):
    data = read_signature_tree(tree)
    images = torch.zeros(len(data), 1, 8, 8)
    batches = SignaturePairBatches(images, data, WRITERS[:3], 100, 16, seed=1, mix=(0.5, 0.5, 0))
    pairs = batches.epoch_pairs()
    assert len(pairs) == 100 and (pairs.kinds != "random").all()
    assert (pairs.labels == (pairs.kinds == "genuine")).all() and pairs.labels.sum() == 50
    x1, x2, y = next(iter(batches))
    assert x1.shape == x2.shape == (16, 1, 8, 8) and y.shape == (16,)
    assert len(list(batches)) == len(batches) == 7
    with pytest.raises(DataError, match="one image per signature"):
        SignaturePairBatches(images[:3], data, WRITERS)


def test_mined_batches_hold_writers_with_their_forgeries(tree):
    from siamkit.evaluation.signature_eval import training_batches
    from siamkit.losses import ContrastiveLoss, MinedTripletLoss
    from siamkit.recipe import parse_recipe

    data = read_signature_tree(tree)
    images = torch.arange(len(data), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    train = WRITERS[:4]
    with pytest.raises(DataError, match="one image per signature"):
        signature_labelled(images[:3], data)
    recipe = parse_recipe({**RECIPE, "batches": {"batch_size": 8, "m_per_class": 2,
                                                 "batches_per_epoch": 5}})  # fmt: skip
    batches = training_batches(recipe, MinedTripletLoss(), data, images, train)
    assert len(list(batches)) == len(batches) == 5
    for x, labels in batches:
        idx = x[:, 0, 0, 0].long().numpy()  # the image index each item came from
        assert set(data.writers[idx]) <= set(train) and len(set(data.writers[idx])) == 2
        for writer in set(data.writers[idx]):  # 2 writers: genuine and forged classes each
            mine = data.writers[idx] == writer
            assert data.forged[idx][mine].sum() == 2 and (~data.forged[idx][mine]).sum() == 2
        # a forgery never shares its label with the genuine signatures it imitates
        genuine, forged = labels[~torch.from_numpy(data.forged[idx])], labels[data.forged[idx]]
        assert not set(genuine.tolist()) & set(forged.tolist())
    pairs = training_batches(recipe, ContrastiveLoss(1.0), data, images, train)
    assert isinstance(pairs, SignaturePairBatches)


# --- reference-set scoring -------------------------------------------------------------------


def test_aggregate_k1_and_k3():
    one = aggregate_scores(torch.tensor([[-0.5], [-2.0]]))
    assert torch.equal(one["mean"], one["max"])
    three = aggregate_scores(torch.tensor([[-1.0, -2.0, -6.0]]))
    assert three["mean"].item() == pytest.approx(-3.0) and three["max"].item() == -1.0
    with pytest.raises(DataError, match="K >= 1"):
        aggregate_scores(torch.zeros(2, 0))


def test_saved_reference_threshold_follows_the_number_of_references():
    extra = {
        "reference_thresholds": {"mean": -5.0, "max": -5.5},
        "reference_thresholds_by_k": {
            "1": {"mean": -1.0},
            "3": {"mean": -3.0},
            "5": {"mean": -5.0},
        },
    }
    assert saved_reference_threshold(extra, 1, "mean") == -1.0
    assert saved_reference_threshold(extra, 3, "mean") == -3.0
    assert saved_reference_threshold(extra, 4, "mean") == -3.0  # nearest saved K (ties: smaller)
    assert saved_reference_threshold(extra, 9, "mean") == -5.0
    assert saved_reference_threshold(extra, 1, "max") is None
    assert saved_reference_threshold({"reference_thresholds": {"max": -5.5}}, 2, "max") == -5.5
    assert saved_reference_threshold({}, 2, "max") is None


def test_reference_scores_mean_max_and_centroid():
    head = EuclideanHead()
    refs = torch.tensor([[[0.0, 0.0], [4.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    questioned = torch.tensor([[2.0, 0.0], [1.0, 4.0]])
    scores = reference_scores(head, questioned, refs)
    assert scores["mean"].tolist() == [-2.0, -3.0] and scores["max"].tolist() == [-2.0, -3.0]
    assert scores["centroid"].tolist() == pytest.approx([0.0, -3.0])  # (2, 0) is the centroid
    one = reference_scores(head, questioned, refs[:, :1])  # K = 1: every aggregate the same
    assert one["mean"].tolist() == one["max"].tolist() == one["centroid"].tolist()
    with pytest.raises(DataError, match="reference embeddings"):
        reference_scores(head, questioned, refs[0])


def test_spread_normalisation_divides_by_the_reference_spread():
    head = EuclideanHead()
    refs = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]])  # distances 3, 4, 5: mean 4
    questioned = torch.tensor([[0.0, 2.0]])  # at 2, sqrt(13), 2 from the references
    normalised = normalised_aggregates(head, questioned, refs, "spread")
    raw = reference_scores(head, questioned, refs)
    for name in ("mean", "max", "centroid"):
        assert normalised[name].item() == pytest.approx(raw[name].item() / 4.0)
    assert normalised["max"].item() == pytest.approx(-0.5)
    # K = 1 has no spread: scores are left as they are
    one = normalised_aggregates(head, questioned, refs[:, :1], "spread")
    assert one["mean"].item() == one["max"].item() == pytest.approx(-2.0)
    assert torch.equal(normalised_aggregates(head, questioned, refs)["mean"], raw["mean"])
    with pytest.raises(DataError, match="normalisation must be one of"):
        normalised_aggregates(head, questioned, refs, "zscore")


@pytest.mark.parametrize("k", [1, 3])
def test_reference_trials_and_scores(tree, k):
    data = read_signature_tree(tree)
    writers = WRITERS[:3]
    trials = reference_trials(data, writers, k, seed=0, draws=2, random_per_writer=4)
    assert trials.references.shape == (len(trials), k)
    for refs, q, kind, writer in zip(
        trials.references, trials.questioned, trials.kinds, trials.writers, strict=True
    ):
        assert (data.writers[refs] == writer).all() and not data.forged[refs].any()
        assert q not in refs
        assert data.forged[q] == (kind == "skilled")
        assert (data.writers[q] == writer) == (kind != "random")
    assert (trials.labels == (trials.kinds == "genuine")).all()
    # embeddings that are the writer id for genuine images, far away for forgeries
    ids = np.array([writers.index(w) if w in writers else 9 for w in data.writers], float)
    emb = torch.tensor(np.stack([ids, 5.0 * data.forged], 1), dtype=torch.float32)
    scores = trial_scores(EuclideanHead(), emb, trials)
    genuine = trials.labels == 1
    assert np.allclose(scores["mean"][genuine], 0) and (scores["max"][~genuine] < 0).all()
    thresholds = choose_reference_thresholds(scores, trials)
    for name in ("mean", "max", "centroid"):
        accepted = scores[name] >= thresholds[name]
        assert accepted[genuine].all() and not accepted[trials.kinds == "skilled"].any()


def test_reference_trials_need_more_genuine_than_k(tree):
    data = read_signature_tree(tree)
    with pytest.raises(DataError, match=f"at least {N_GENUINE + 1} genuine"):
        reference_trials(data, WRITERS[:2], N_GENUINE)


# --- training a tiny model, saving, eval and verify ------------------------------------------

RECIPE = {
    "seed": 0,
    "data": {"name": "signatures", "params": {"size": list(SIZE), "canvas": [128, 192]}},
    "encoder": {"name": "signet", "params": {"input_size": list(SIZE), "width": 0.1,
                                             "first_stride": 2, "embedding_dim": 16}},
    "loss": {"name": "contrastive", "params": {"margin": 1.0}},
    "batches": {"batch_size": 16, "examples_per_epoch": 64},
    "training": {"epochs": 1},
}  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tree, tmp_path_factory) -> Path:
    from siamkit.evaluation.signature_eval import (
        EmbeddedSignatures,
        calibrate,
        preprocess_of,
        save_signature_model,
        train_fold,
    )
    from siamkit.recipe import parse_recipe

    recipe = parse_recipe(RECIPE)
    data = read_signature_tree(tree)
    images = preprocess_of(recipe)(data.paths)
    split = writer_folds(data.writer_ids(), n_folds=2, n_val=1, seed=0)[0]
    out = tmp_path_factory.mktemp("run")
    fold = train_fold(recipe, data, images, split, out, show_progress=False)
    embedded = EmbeddedSignatures.of(fold.network, images, data, split.val)
    thresholds = calibrate(embedded, split.val, ks=(1, 3), normalisation="spread")
    assert set(thresholds) == {1, 3} and set(thresholds[3]) == {"mean", "max", "centroid"}
    return save_signature_model(out / "model", fold, recipe, thresholds, split, "spread", "max")


def test_embedded_signatures_embed_only_the_asked_writers(model_dir, tree):
    """One embedding pass serves every protocol step; other writers' rows stay zero."""
    import siamkit
    from siamkit.evaluation.embedding import embed_all
    from siamkit.evaluation.signature_eval import EmbeddedSignatures

    model = siamkit.load(model_dir)
    data = read_signature_tree(tree)
    images = model.prepare(data.paths)
    writers = WRITERS[:2]
    embedded = EmbeddedSignatures.of(model.network, images, data, writers)
    inside = torch.from_numpy(data.of_writers(writers))
    outside = np.setdiff1d(np.arange(len(data)), data.of_writers(writers))
    assert torch.allclose(embedded.embeddings[inside], embed_all(model.network, images[inside]))
    assert not embedded.embeddings[torch.from_numpy(outside)].any()
    trials, scores = embedded.scores(writers, ks=(3,), draws=1)[3]
    assert set(scores) == {"mean", "max", "centroid"} and len(scores["mean"]) == len(trials)
    with pytest.raises(DataError, match="were not embedded"):
        embedded.scores(WRITERS[:3])


def test_a_class_proxy_loss_trains_a_fold(tree, tmp_path):
    """Proxy losses get one proxy per training class (each writer's genuine and forged)."""
    from siamkit.evaluation.signature_eval import preprocess_of, train_fold
    from siamkit.recipe import parse_recipe

    recipe = parse_recipe({
        **RECIPE, "loss": {"name": "proxy_anchor"},
        "batches": {"batch_size": 8, "m_per_class": 2, "batches_per_epoch": 2},
    })  # fmt: skip
    data = read_signature_tree(tree)
    images = preprocess_of(recipe)(data.paths)
    split = writer_folds(data.writer_ids(), n_folds=2, n_val=1, seed=0)[0]
    fold = train_fold(recipe, data, images, split, tmp_path, show_progress=False)
    assert fold.history.epochs and np.isfinite(fold.history.epochs[0]["loss"])


def test_saved_model_loads_in_a_fresh_process(model_dir, tree):
    """``siamkit.load`` alone (as ``siamkit eval`` and ``verify`` start) finds the signature
    preprocessing, which registers itself only when its module is imported."""
    import subprocess
    import sys

    image = tree / "genuine" / WRITERS[0] / f"{WRITERS[0]}_00.png"
    code = f"import siamkit; print(siamkit.load({str(model_dir)!r}).embed([{str(image)!r}]).shape)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("torch.Size([1,"), done.stdout


def test_saved_model_carries_preprocessing_and_thresholds(model_dir, tree):
    import siamkit

    model = siamkit.load(model_dir)
    assert model.config.preprocess.name == "signature"
    extra = model.config.extra
    assert set(extra["reference_thresholds"]) == {"mean", "max", "centroid"}
    assert extra["reference_aggregate"] == "max"
    assert extra["reference_thresholds_k"] == 3  # the largest K calibrated
    writers = extra["writers"]
    assert not set(writers["train"]) & set(writers["test"])
    questioned = tree / "genuine" / WRITERS[0] / f"{WRITERS[0]}_00.png"
    refs = [tree / "genuine" / WRITERS[0] / f"{WRITERS[0]}_0{i}.png" for i in (1, 2, 3)]
    scores = score_against_references(model, questioned, refs)
    mean, best = scores["mean"], scores["max"]
    assert best >= mean and set(scores) == {"mean", "max", "centroid"}
    assert extra["reference_normalisation"] == "spread"  # verify scores as calibrated
    emb = model.embed([questioned, *refs])
    raw = model.network.head.pairwise(emb[:1], emb[1:]).detach()
    spread = torch.cdist(emb[1:], emb[1:]).sum() / 6  # 3 references: 6 ordered pairs
    assert mean == pytest.approx(raw.mean().item() / spread.item(), rel=1e-4)
    with pytest.raises(DataError, match="at least one reference"):
        score_against_references(model, questioned, [])


def test_eval_command_prints_k_table_on_unseen_writers(model_dir, tree, capsys):
    assert main(["eval", str(model_dir), str(tree)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at 80 columns
    assert "signature verification" in out and "skilled" in out and "random" in out
    assert "test writers" in out


def test_eval_of_a_model_saved_without_centroid_thresholds(model_dir, tree, tmp_path, capsys):
    older = tmp_path / "older"
    shutil.copytree(model_dir, older)
    config = json.loads((older / "config.json").read_text())
    extra = config["extra"]
    for thresholds in [extra["reference_thresholds"], *extra["reference_thresholds_by_k"].values()]:
        del thresholds["centroid"]
    (older / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(older), str(tree)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "centroid: none saved, at its own EER" in out and "validation writers" in out


def test_verify_with_references(model_dir, tree, capsys):
    folder = tree / "genuine" / WRITERS[1]
    files = sorted(str(p) for p in folder.iterdir())
    argv = ["verify", str(model_dir), files[0], "--references", *files[1:4]]
    assert main([*argv, "--aggregate", "centroid"]) == 0
    out = capsys.readouterr().out
    assert "decision" in out and "threshold" in out and "centroid" in out
    assert main(argv) == 0  # the model's own aggregate
    assert "max" in capsys.readouterr().out
    assert main([*argv, "--aggregate", "median"]) == 1
    assert "--aggregate must be one of mean, max, centroid" in capsys.readouterr().err


def test_verify_unreadable_file_is_a_clear_error(model_dir, tree, tmp_path, capsys):
    bad = tmp_path / "questioned.png"
    bad.write_text("this is not an image")
    ref = str(next((tree / "genuine" / WRITERS[0]).iterdir()))
    assert main(["verify", str(model_dir), str(bad), "--references", ref]) == 1
    err = capsys.readouterr().err
    assert "questioned.png" in err and "not a readable image" in err and "Traceback" not in err
    assert main(["verify", str(model_dir), str(tmp_path / "nope.png"), "--references", ref]) == 1
    assert "no such file" in capsys.readouterr().err
