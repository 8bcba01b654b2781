"""The command line: a recipe trains end to end, errors are one line with a non-zero exit."""

from __future__ import annotations

import yaml

from siamkit.cli import main

RECIPE = {
    "seed": 0,
    "data": {"name": "digits", "params": {"size": 16}},
    "encoder": {"name": "conv4", "params": {"input_size": 16, "channels": 16,
                                            "embedding_dim": 16}},
    "loss": {"name": "contrastive"},
    "batches": {"batch_size": 64, "examples_per_epoch": 512},
    "training": {"epochs": 2},
    "evaluation": {"val_pairs": 300, "test_pairs": 300,
                   "fewshot": [{"n_way": 4, "k_shot": 1, "episodes": 50}]},
}  # fmt: skip


def test_train_then_verify_and_eval(tmp_path, capsys):
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4-way 1-shot" in printed and "eer" in printed
    model = out / "model"
    for name in ("config.json", "model.safetensors"):
        assert (model / name).is_file()
    assert (out / "roc.png").is_file() and (out / "report.json").is_file()
    # verify two digit images written from the test set
    from siamkit.data.datasets import build_dataset
    from siamkit.demo import write_examples

    write_examples(build_dataset("digits", size=16).test, tmp_path / "ex")
    assert main(["verify", str(model), str(tmp_path / "ex/six_a.png"),
                 str(tmp_path / "ex/six_b.png")]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert "decision" in shown and "aggregate" not in shown  # reference columns only with K refs
    # resume a finished run: nothing left to do, same model saved again
    assert main(["train", str(config), "--out", str(out), "--resume"]) == 0


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["train", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RECIPE, "encoder": {"name": "nope"}}))
    assert main(["train", str(bad)]) == 1
    assert "unknown encoder 'nope'" in capsys.readouterr().err

    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**RECIPE, "trainig": {}}))
    assert main(["train", str(typo)]) == 1
    assert "trainig" in capsys.readouterr().err

    assert main(["verify", str(tmp_path / "no-model"), "a.png", "b.png"]) == 1
    assert "not a model folder" in capsys.readouterr().err

    assert main(["verify", str(tmp_path), "a.png"]) == 1
    assert "exactly one" in capsys.readouterr().err
