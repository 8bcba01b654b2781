"""Signature thresholds per K chosen by a target (``evaluation.threshold_rule``) on validation
writers, with the FAR interval those writers support: stored in the model folder, printed by
``siamkit verify --references`` and ``siamkit eval``, and read back from older folders
(synthetic scores and a tiny untrained network, fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit.cli import main
from siamkit.data.signatures import SignatureSet, read_signature_tree, writer_folds
from siamkit.errors import DataError
from siamkit.evaluation.reference_set import far_promise, threshold_support
from siamkit.evaluation.signature_eval import EmbeddedSignatures, thresholds_by_rule
from siamkit.gallery.calibration import far_interval
from siamkit.gallery.openset import SUPPORT_FACTOR
from siamkit.heads import EuclideanHead
from siamkit.saved_thresholds import SUPPORT_KEY, saved_reference_support
from tests.unit.test_signatures import RECIPE, WRITERS, write_tree

# --- synthetic embeddings: the rule and the support rows --------------------------------------


def synthetic_embedded(n_writers: int, seed: int = 0) -> tuple[EmbeddedSignatures, list[str]]:
    """``n_writers`` writers with 8 genuine signatures and 12 skilled forgeries each, embedded
    in 8-d: genuine ones near the writer's centre, forgeries a little further (overlapping)."""
    rng = np.random.default_rng(seed)
    writers = [f"w{i:03d}" for i in range(n_writers)]
    rows, names, forged = [], [], []
    for writer in writers:
        centre = rng.normal(0, 3, 8)
        for is_forged, count, spread in ((False, 8, 0.5), (True, 12, 0.8)):
            rows.append(centre + rng.normal(0, spread, (count, 8)) + is_forged * 0.4)
            names += [writer] * count
            forged += [is_forged] * count
    data = SignatureSet([Path(f"{i}.png") for i in range(len(names))], np.array(names),
                        np.array(forged))  # fmt: skip
    embeddings = torch.from_numpy(np.concatenate(rows)).float()
    return EmbeddedSignatures(EuclideanHead(), embeddings, data, frozenset(writers)), writers


@pytest.fixture(scope="module")
def many():
    embedded, writers = synthetic_embedded(40)
    return embedded.scores(writers, (1, 3, 5), seed=0)


def skilled_far(values: np.ndarray, trials, threshold: float) -> float:
    skilled = trials.kinds == "skilled"
    return float((values[skilled].astype(np.float64) >= threshold).mean())


@pytest.mark.parametrize("rule", ["far<=0.05", "far<=0.1"])
def test_a_far_rule_keeps_the_validation_far_at_most_the_rate(many, rule):
    target = float(rule.split("<=")[1])
    thresholds, support = thresholds_by_rule(many, rule)
    assert set(thresholds) == set(support) == {1, 3, 5}
    for k, (trials, scores) in many.items():
        forgeries = len(np.unique(trials.questioned[trials.kinds == "skilled"]))
        for aggregate, values in scores.items():
            t, row = thresholds[k][aggregate], support[k][aggregate]
            far = skilled_far(values, trials, t)
            assert far <= target and row["far_measured"] == pytest.approx(far)
            # the lowest such threshold: the next score down would accept more than the rate
            below = values[(trials.kinds != "random") & (values < t)]
            if len(below):
                assert skilled_far(values, trials, float(below.max())) > target
            assert row["rule"] == rule and row["far"] == target and row["threshold"] == t
            assert (row["k"], row["aggregate"], row["writers"]) == (k, aggregate, 40)
            assert row["trials"] == forgeries == 40 * 12  # each forgery once, over its draws
            assert row["accepted"] == round(far * forgeries)
            assert (row["far_low"], row["far_high"]) == far_interval(row["accepted"], forgeries)
            assert row["supported"] == (row["far_high"] <= SUPPORT_FACTOR * target)
    assert support[5]["mean"]["supported"] and support[5]["mean"]["warning"] is None


def test_an_unsupported_rate_warns(many):
    """480 forgeries cannot support a FAR of 0.1%: the interval's upper end is ~0.8%."""
    _, support = thresholds_by_rule(many, "far<=0.001")
    row = support[5]["centroid"]
    assert row["supported"] is False and row["far_high"] > SUPPORT_FACTOR * 0.001
    assert "480 skilled forgeries of 40 validation writers" in row["warning"]
    assert "not the 0.10% asked" in row["warning"] and "K = 5 (centroid)" in row["warning"]


def test_other_rules_store_the_interval_without_a_promise(many):
    thresholds, support = thresholds_by_rule(many)  # eer, the default for signatures
    trials, scores = many[3]
    row = support[3]["max"]
    assert row["far"] is None and row["supported"] is None and row["warning"] is None
    assert row["far_measured"] == pytest.approx(
        skilled_far(scores["max"], trials, row["threshold"])
    )
    strict, _ = thresholds_by_rule(many, "frr<=0.05")
    assert strict[3]["max"] <= thresholds[3]["max"]  # fewer genuine rejected: lower threshold
    with pytest.raises(DataError, match="sentence pairs"):
        thresholds_by_rule(many, "f1")
    with pytest.raises(DataError, match="far<=X"):
        thresholds_by_rule(many, "far<=2")


def test_the_promise_is_measured_on_other_writers(many):
    embedded, writers = synthetic_embedded(12, seed=1)
    test = embedded.scores(writers, (5,), seed=1000)[5]
    _, support = thresholds_by_rule(many, "far<=0.05")
    row = far_promise(support[5]["mean"], test[1]["mean"], test[0])
    assert row["test_trials"] == 12 * 12 and row["far"] == 0.05
    assert row["test_far"] == pytest.approx(skilled_far(test[1]["mean"], test[0], row["threshold"]))
    assert row["within_asked"] == (row["test_far"] <= 0.05)
    assert row["within_interval"] == (row["test_far"] <= row["far_high"])


def test_no_skilled_forgeries_is_a_clear_error():
    embedded, writers = synthetic_embedded(3)
    trials, scores = embedded.scores(writers, (1,))[1]
    random_only = trials.kinds != "skilled"
    kept = type(trials)(*(getattr(trials, f)[random_only] for f in
                          ("references", "questioned", "labels", "kinds", "writers")))  # fmt: skip
    with pytest.raises(DataError, match="no skilled forgeries"):
        threshold_support(scores["mean"][random_only], kept, 0.0, "eer", 1, "mean")


def test_saved_support_follows_the_thresholds_nearest_k():
    extra = {SUPPORT_KEY: {"1": {"mean": {"k": 1}}, "5": {"mean": {"k": 5}}}}
    assert saved_reference_support(extra, 4, "mean") == {"k": 5}
    assert saved_reference_support(extra, 3, "mean") == {"k": 1}  # a tie: the smaller K
    assert saved_reference_support(extra, 5, "max") is None
    assert saved_reference_support({"reference_thresholds": {"mean": 0.1}}, 5, "mean") is None


# --- a model folder: stored, printed by verify and eval, older folders ------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("signatures"))


@pytest.fixture(scope="module")
def model_dir(tree, tmp_path_factory) -> Path:
    """An untrained tiny network through the protocol with ``far<=0.1`` (1 validation writer:
    3 forgeries, which cannot support 10%)."""
    from siamkit.evaluation.signature_eval import (
        TrainedFold,
        evaluate_fold,
        preprocess_of,
        save_signature_model,
    )
    from siamkit.recipe import build_network, parse_recipe
    from siamkit.training import History

    recipe = parse_recipe({**RECIPE, "evaluation": {"threshold_rule": "far<=0.1"}})
    data = read_signature_tree(tree)
    images = preprocess_of(recipe)(data.paths)
    split = writer_folds(data.writer_ids(), n_folds=2, n_val=1, seed=0)[0]
    torch.manual_seed(0)
    network, head_spec = build_network(recipe)
    rule = recipe.evaluation.threshold_rule
    result = evaluate_fold(network.eval(), images, data, split, rule=rule)
    assert result.rule == rule and set(result.support) == {1, 3, 5}
    fold = TrainedFold(network, head_spec, History(), 0.0)
    out = tmp_path_factory.mktemp("run") / "model"
    return save_signature_model(out, fold, recipe, result.thresholds, split,
                                result.normalisation, "mean", result.support)  # fmt: skip


def flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps at 80 columns


def test_the_folder_stores_the_support_beside_the_thresholds(model_dir):
    extra = json.loads((model_dir / "config.json").read_text())["extra"]
    assert extra["reference_threshold_rule"] == "far<=0.1"
    by_k, support = extra["reference_thresholds_by_k"], extra[SUPPORT_KEY]
    assert set(support) == set(by_k) == {"1", "3", "5"}
    for k, rows in support.items():
        for aggregate, row in rows.items():
            assert row["threshold"] == by_k[k][aggregate] and row["trials"] == 3
            assert row["far_measured"] <= 0.1 and row["supported"] is False
            assert "3 skilled forgeries of 1 validation writers" in row["warning"]


def _references(tree: Path) -> list[str]:
    files = sorted(str(p) for p in (tree / "genuine" / WRITERS[1]).iterdir())
    return ["verify", files[0], "--references", *files[1:6]]


def test_verify_prints_the_interval_and_the_warning(model_dir, tree, capsys):
    command = _references(tree)
    assert main([command[0], str(model_dir), *command[1:]]) == 0
    out = flat(capsys.readouterr().out)
    row = json.loads((model_dir / "config.json").read_text())["extra"][SUPPORT_KEY]["5"]["mean"]
    assert (
        f"threshold chosen by far<=0.1 on 1 validation writers (K = 5, mean): {row['accepted']} "
        f"of 3 skilled forgeries accepted, a FAR of {row['far_low']:.2%}-{row['far_high']:.2%} "
        "(95% interval, 10.00% asked)"
    ) in out
    assert "warning: 3 skilled forgeries" in out and "not the 10.00% asked" in out


def test_an_older_folder_without_the_table_still_verifies(model_dir, tree, tmp_path, capsys):
    older = tmp_path / "older"
    shutil.copytree(model_dir, older)
    config = json.loads((older / "config.json").read_text())
    del config["extra"][SUPPORT_KEY], config["extra"]["reference_threshold_rule"]
    (older / "config.json").write_text(json.dumps(config))
    command = _references(tree)
    assert main([command[0], str(older), *command[1:]]) == 0
    out = flat(capsys.readouterr().out)
    assert "decision" in out and "FAR of" not in out and "warning" not in out
    assert main(["eval", str(older), str(tree)]) == 0
    out = flat(capsys.readouterr().out)
    assert "val_far" not in out and "skilled" in out


def test_eval_shows_the_validation_interval_beside_the_test_far(model_dir, tree, capsys):
    assert main(["eval", str(model_dir), str(tree)]) == 0
    out = flat(capsys.readouterr().out)
    assert "val_far" in out and "thresholds chosen by far<=0.1 on the validation writers" in out
    assert "warning: 3 skilled forgeries of 1 validation writers" in out
