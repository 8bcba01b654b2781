"""Studies behind the calibration part of benchmarks/trust.py (benchmarks/trust_calibration.py):
why a task's map misses the ECE target, measured on trained models without training.

- :func:`pair_mix_study` (Omniglot, run with the omniglot task): the within-alphabet share of
  the calibration pairs' different pairs, their number and the map family, on the validation
  classes alone, then (the choice made) on the test pairs.
- :func:`signature_study` (``TRUST_CALIBRATION_STUDY=signatures``): the sampling noise of ECE on
  the test trials, the trials' base rates and more reference draws of the validation writers.

See docs/calibration.md, "The pair mix" and "Signatures: more reference draws".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks_common import markdown_table

TARGET_ECE = 0.02


STUDY_SEEDS = (0, 1, 2)  # pair draws of the Omniglot pair-mix study
TEST_DRAW_SEEDS = (1000, 1001, 1002, 1003, 1004)  # reference draws of the signature test trials


def pair_mix_study(folder: Path) -> dict[str, Any]:
    """Why the Omniglot map missed, measured on the validation classes alone: 5 folds grouped by
    class (fit on 4/5 of the classes, measure on 8000 pairs of the others drawn at the test
    split's within-alphabet share), the ECE and log-loss of maps fitted on uniform or
    share-matched pairs, 2000 or 5000 of them, and of other map families. Then, the choice
    made, the test ECE of the same variants over :data:`STUDY_SEEDS` validation pair draws."""
    import numpy as np
    import torch

    from siamkit.calibration import expected_calibration_error, fit_calibrator, log_loss
    from siamkit.data.datasets import build_dataset
    from siamkit.data.pairs import make_pairs, regroup_negatives, within_group_share
    from siamkit.evaluation.embedding import embed_all
    from siamkit.model import load

    model = load(folder)
    recipe = json.loads((folder / "config.json").read_text())["extra"]["recipe"]
    splits = build_dataset(
        recipe["data"]["name"], recipe.get("data_dir"), **recipe["data"]["params"]
    )
    val, test = splits.val, splits.test
    share = within_group_share(test.labels, test.groups)
    emb = {"val": embed_all(model.network, val.items), "test": embed_all(model.network, test.items)}

    def draw(split, idx, n, mix, seed):  # (scores, labels) of n pairs among the items idx
        data = val if split == "val" else test
        lab, grp = data.labels[idx], data.groups[idx]
        a, b, y = make_pairs(lab, n, seed)
        if mix is not None:
            b = torch.as_tensor(regroup_negatives(lab, grp, a, b, y, mix, seed))
        e = emb[split][idx]
        with torch.no_grad():
            return model.network.head(e[a], e[b]).numpy(), y.numpy()

    variants = {"uniform, 2000 (before)": (None, 2000), "uniform, 5000": (None, 5000),
                "matched, 2000": (share, 2000), "matched, 5000 (now)": (share, 5000)}  # fmt: skip
    classes = np.random.default_rng(0).permutation(np.unique(val.labels.numpy()))
    folds = np.array_split(classes, 5)
    cv: dict[str, list[tuple[float, float]]] = {}
    for k, held in enumerate(folds):
        inside = np.isin(val.labels.numpy(), held)
        held_s, held_y = draw("val", np.flatnonzero(inside), 8000, share, 100 + k)
        for name, (mix, n) in variants.items():
            s, y = draw("val", np.flatnonzero(~inside), n, mix, k)
            for family, p in _families(s, y, held_s, k).items():
                key = name if family == "selected" else f"{name}, {family}"
                if family == "selected" or name.startswith("matched, 5000"):
                    cv.setdefault(key, []).append(
                        (expected_calibration_error(p, held_y), log_loss(p, held_y))
                    )
    all_val = np.arange(len(val.labels))
    test_s, test_y = draw("test", np.arange(len(test.labels)), recipe["evaluation"]["test_pairs"],
                          None, recipe["seed"] + 1)  # fmt: skip
    on_test = {
        name: [expected_calibration_error(fit_calibrator(*draw("val", all_val, n, mix, seed),
                                                         resamples=20).predict(test_s), test_y)
               for seed in STUDY_SEEDS]
        for name, (mix, n) in variants.items()
    }  # fmt: skip
    return {
        "test_within_group_share": share,
        "val_within_group_share": within_group_share(val.labels, val.groups),
        "validation_cv": {
            k: {"ece": [e for e, _ in v], "log_loss": [ll for _, ll in v]} for k, v in cv.items()
        },  # fmt: skip
        "test_ece": on_test,
    }


def _families(s: Any, y: Any, held: Any, seed: int) -> dict[str, Any]:
    """Probabilities on ``held`` of maps fitted on (s, y): the library's choice (Platt or
    isotonic by cross-validated log-loss), each of those two, and two 3-parameter logistic
    families: quadratic in the score, and beta (on log u and log(1 - u), u = distance / 2)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from siamkit.calibration import _apply, _fit_map, fit_calibrator

    def u(x):
        return np.clip(-x / 2, 1e-6, 1 - 1e-6)

    features = {
        "quadratic logistic": lambda x: np.c_[x, x**2],
        "beta": lambda x: np.c_[np.log(u(x)), -np.log(1 - u(x))],
    }
    out = {"selected": fit_calibrator(s, y, resamples=20, seed=seed).predict(held)}
    out |= {m: np.clip(_apply(m, _fit_map(m, s, y), held), 1e-4, 1 - 1e-4)
            for m in ("platt", "isotonic")}  # fmt: skip
    for name, f in features.items():
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(f(s), y)
        out[name] = np.clip(lr.predict_proba(f(held))[:, 1], 1e-4, 1 - 1e-4)
    return out


def study_markdown(study: dict[str, Any]) -> list[str]:
    """The pair-mix study of :func:`pair_mix_study` as Markdown."""
    import numpy as np

    if not study:
        return []
    cv = [{"fitted on (negatives, pairs[, family])": k,
           "ECE (mean ± std over 5 class folds)":
               f"{np.mean(v['ece']):.4f} ± {np.std(v['ece']):.4f}",
           "log-loss": f"{np.mean(v['log_loss']):.4f}"}
          for k, v in study["validation_cv"].items()]  # fmt: skip
    test = [{"fitted on": k, "test ECE per pair draw": ", ".join(f"{e:.4f}" for e in v),
             "mean": f"{np.mean(v):.4f}"} for k, v in study["test_ece"].items()]  # fmt: skip
    return [
        "", "### Omniglot: the pair mix", "",
        f"Uniform pairs put {study['val_within_group_share']:.1%} of the validation negatives "
        "within one alphabet (4 validation alphabets) but only "
        f"{study['test_within_group_share']:.1%} of the test negatives (20 test alphabets). "
        "Validation classes only, 5 folds grouped by class, held-out pairs drawn at the test "
        "share ('matched': calibration negatives redrawn at that share; 'uniform': as drawn):",
        "", markdown_table(cv), "",
        f"Test ECE of the same variants (choice already made), pair draws {STUDY_SEEDS}:", "",
        markdown_table(test),
    ]  # fmt: skip


def signature_study(folder: Path, draws: tuple[int, ...] = (5, 20, 50, 100, 200)) -> dict[str, Any]:
    """Why signatures stay near 0.02, on the saved fold-0 model (no training): the ECE a
    perfectly calibrated map shows on the test trials (400 label draws: mean, 90th percentile,
    how often above the target), the base rates of the validation and test trials, and the map
    fitted on more reference draws of the validation writers (K = 5, the model's aggregate):
    leave one validation writer out (fit on the trials of the other 7, measure on the held-out
    writer's trials of 20 fixed draws, its random forgeries taken from all 8 writers as in the
    test; pooled over the 8), then, the choice made, on the test writers."""
    import numpy as np

    from siamkit.calibrate_model import embedded_signatures, saved_recipe
    from siamkit.calibration import expected_calibration_error, fit_calibrator, saved_calibration
    from siamkit.model import load

    model = load(folder)
    recipe, extra = saved_recipe(folder, model), model.config.extra
    embedded, writers = embedded_signatures(model, recipe, folder, None)
    aggregate, norm = extra["reference_aggregate"], extra["reference_normalisation"]

    def trials(names, n_draws, seed, by_writer=False):
        found, scores = embedded.scores(names, (5,), seed, draws=n_draws, normalisation=norm)[5]
        return (scores[aggregate], found.labels) + ((found.writers,) if by_writer else ())

    test_s, test_y = trials(writers["test"], 5, 1000)  # as evaluate_fold scores the test
    p = saved_calibration(extra, k=5, aggregate=aggregate).predict(test_s)
    rng = np.random.default_rng(0)
    perfect = np.array([expected_calibration_error(p, rng.random(len(p)) < p) for _ in range(400)])
    out: dict[str, Any] = {
        "test_trials": len(test_y), "test_ece": expected_calibration_error(p, test_y),
        "perfect_map_mean": float(perfect.mean()),
        "perfect_map_p90": float(np.quantile(perfect, 0.9)),
        "perfect_map_above_target": float((perfect > TARGET_ECE).mean()),
        "val_genuine_share": float(trials(writers["val"], 5, recipe.seed)[1].mean()),
        "test_genuine_share": float(test_y.mean()), "by_draws": {},
        "test_ece_by_test_draw": [
            expected_calibration_error(saved_calibration(extra, k=5, aggregate=aggregate)
                                       .predict(s), y)
            for s, y in (trials(writers["test"], 5, seed) for seed in TEST_DRAW_SEEDS)
        ],
    }  # fmt: skip
    held_s, held_y, held_w = trials(writers["val"], 20, 99, by_writer=True)
    for n in draws:
        maps = {
            w: fit_calibrator(*trials([v for v in writers["val"] if v != w], n, recipe.seed),
                              resamples=2)
            for w in writers["val"]
        }  # fmt: skip
        pooled_p = np.concatenate([maps[w].predict(held_s[held_w == w]) for w in maps])
        pooled_y = np.concatenate([held_y[held_w == w] for w in maps])
        fitted = fit_calibrator(*trials(writers["val"], n, recipe.seed), resamples=2)
        out["by_draws"][str(n)] = {
            "calibration_trials": fitted.pairs,
            "val_leave_one_writer_out_ece": expected_calibration_error(pooled_p, pooled_y),
            "test_ece": expected_calibration_error(fitted.predict(test_s), test_y),
        }
    return out


def signature_study_markdown(study: dict[str, Any]) -> list[str]:
    """:func:`signature_study` as Markdown."""
    if not study:
        return []
    rows = [{"reference draws": n, "calibration trials": r["calibration_trials"],
             "validation ECE (leave one writer out, pooled)":
                 f"{r['val_leave_one_writer_out_ece']:.4f}",
             "test ECE": f"{r['test_ece']:.4f}"} for n, r in study["by_draws"].items()]  # fmt: skip
    return [
        "", "### Signatures: reference draws and the test set's noise", "",
        f"On the {study['test_trials']} test trials (K = 5) the saved map scores ECE "
        f"{study['test_ece']:.4f}; a perfectly calibrated map would score "
        f"{study['perfect_map_mean']:.4f} on average, above {TARGET_ECE} in "
        f"{study['perfect_map_above_target']:.0%} of 400 label draws (90th percentile "
        f"{study['perfect_map_p90']:.4f}); on other reference draws of the same test writers "
        f"(seeds {', '.join(map(str, TEST_DRAW_SEEDS))}) the same map scores "
        f"{', '.join(f'{e:.4f}' for e in study.get('test_ece_by_test_draw', []))}. "
        "Genuine share of the trials: validation "
        f"{study['val_genuine_share']:.1%}, test {study['test_genuine_share']:.1%} (writers "
        "differ in how many genuine and forged signatures they have). Maps fitted on more "
        "reference draws of the 8 validation writers, measured first on validation (leave one "
        "writer out), then on the test writers:", "", markdown_table(rows),
    ]  # fmt: skip
