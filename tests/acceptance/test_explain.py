"""Explanations on real AT&T faces: a short-trained recipe writes its explained test pairs, and
on genuine pairs of people it never saw, deleting the most attributed patches lowers the score
much faster than deleting random ones, while a map of noise does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import dataset_or_skip, training_seed, training_threads
from siamkit.data import build_dataset
from siamkit.data.pairs import make_pairs
from siamkit.explain import auc_ratio, pair_deletion
from siamkit.recipe import load_recipe, parse_recipe, run_recipe

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "faces.yaml"
EPOCHS, PAIRS = 8, 24
METHODS = ["integrated_gradients", "occlusion", "random"]

# Measured (8 epochs, 24 pairs, 1 thread): seed 0 integrated gradients 0.377 (occlusion 0.483),
# seed 1 0.366 (0.487); seed 0 with 2 threads 0.380 (0.504); the full recipe over 100 pairs
# (benchmarks/trust_explain.py) 0.346. CPU time of the whole test with the recipe's 1 thread: 45 s
# (user + sys; 298 s with SIAMKIT_TEST_THREADS=2 on the loaded machine, threads spinning).
BOUNDS = {
    "test_attributions_are_faithful_on_unseen_faces": {
        # trained maps 0.366-0.380; a map of noise (the control below) 0.835-0.842: 0.6 sits
        # between them with room for other CPUs, so a map that ignores the model fails
        "best_ratio": ("<=", 0.6),
        # the noise map itself: 0.835-0.842 (below 1 because the 28x23 image's last column of
        # patches is 2 pixels wide and sum-ranking puts it last; 1.06 on Omniglot's even grid).
        # This guards the test itself: a deletion test under which noise scores like a real map
        # (<= 0.7) could not tell a faithful map from a broken one
        "random_ratio": (">=", 0.7),
    },
}


@pytest.mark.acceptance
def test_attributions_are_faithful_on_unseen_faces(tmp_path, figures):
    dataset_or_skip("att_faces")
    raw = load_recipe(CONFIG).model_dump(mode="json")
    raw["seed"] = training_seed(raw["seed"])
    raw["training"]["threads"] = training_threads(raw["training"]["threads"])
    raw["training"]["epochs"] = EPOCHS
    raw["evaluation"] |= {"plots": False, "val_pairs": 500, "test_pairs": 1000}
    result = run_recipe(parse_recipe(raw), tmp_path / "run", show_progress=False)
    explained = tmp_path / "run" / "explained"
    records = json.loads((explained / "explained.json").read_text())
    assert {r["kind"] for r in records} >= {"genuine-right", "impostor-right"}
    for record in records:
        assert (explained / f"{record['kind']}.png").is_file()
        right = record["kind"].endswith("right")
        genuine = record["kind"].startswith("genuine")
        assert (record["decision"] == "same") == (genuine == right)

    import siamkit

    network = siamkit.load(result.model_dir).network
    test = build_dataset("att_faces", **raw["data"]["params"]).test  # 12 unseen people
    a, b, _ = make_pairs(test.labels, PAIRS, seed=0, positive_fraction=1.0)
    tested: dict[str, list] = {m: [] for m in METHODS}
    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        for method, results in pair_deletion(
            network, test.items[i], test.items[j], METHODS, "blur", steps=8, random_orders=2,
            options={"integrated_gradients": {"steps": 8}},
        ).items():  # fmt: skip
            tested[method] += results
    ratios = {m: auc_ratio(r) for m, r in tested.items()}
    for method in ("integrated_gradients", "occlusion"):
        figures.note(f"{method}_ratio", ratios[method])
    figures.check("best_ratio", min(ratios["integrated_gradients"], ratios["occlusion"]), ratios)
    figures.check("random_ratio", ratios["random"], ratios)
