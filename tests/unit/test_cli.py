"""The command line: a recipe trains end to end, errors are one line with a non-zero exit."""

from __future__ import annotations

import json

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
    # the model names the classes it trained and validated on, for `siamkit eval` on other data
    seen = json.loads((model / "config.json").read_text())["extra"]["seen_classes"]
    assert seen["train"] == list("012345") and seen["test"] == list("6789")  # digits' split
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


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return its stdout."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout


def test_help_and_gallery_commands_do_not_import_torch(tmp_path):
    code = f"""
import sys
import numpy as np
from siamkit.cli import main
from siamkit.gallery import Gallery

with Gallery.open({str(tmp_path / "g")!r}) as g:
    g.enroll("ann", np.eye(2, 8, dtype=np.float32))
codes = [main(args) for args in (["--help"], ["people", "--help"], ["--version"],
         ["people", {str(tmp_path / "g")!r}], ["remove", {str(tmp_path / "g")!r}, "--name", "ann"])]
print("CODES", codes)
print("HEAVY", sorted(m for m in ("torch", "torchvision", "sklearn", "scipy") if m in sys.modules))
"""
    out = run_python(code)
    assert "CODES [0, 0, 0, 0, 0]" in out and "removed 'ann': 2 templates" in out
    assert "HEAVY []" in out


def test_package_names_are_lazy_but_work():
    out = run_python(
        "import sys, siamkit; print('torch' in sys.modules); "
        "print(siamkit.SiameseNetwork.__name__, siamkit.load.__module__, siamkit.Model.__name__); "
        "print('torch' in sys.modules); from siamkit import save_model; print(save_model.__name__)"
    )
    expected = ["False", "SiameseNetwork", "siamkit.model", "Model", "True", "save_model"]
    assert out.split() == expected


def test_version_option_prints_the_installed_version(capsys):
    from importlib.metadata import version

    import siamkit

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"siamkit {version('siamkit')}"
    assert siamkit.__version__ == version("siamkit")


def test_usage_errors_are_reported_without_traceback(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "No such command" in err and "Traceback" not in err
