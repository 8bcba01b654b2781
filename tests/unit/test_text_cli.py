"""Text commands end to end on a tiny STS-style dataset: train (and its alias train-text),
similarity, match-text, classify-text, paraphrase; and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import siamkit
from siamkit.checkpoint import load_tensors
from siamkit.cli import main
from siamkit.errors import ConfigError
from siamkit.recipe import parse_recipe, run_recipe
from siamkit.training import last_epoch_weights

SENTENCES = [
    ("a man plays a guitar", "a man is playing the guitar", 4.8),
    ("a woman cuts an onion", "a woman is slicing an onion", 4.6),
    ("a dog runs in the park", "a dog is running on grass", 4.0),
    ("a man plays a guitar", "a woman cuts an onion", 0.2),
    ("a cat sleeps on a sofa", "a dog runs in the park", 0.8),
    ("the stock market fell today", "shares dropped sharply", 3.5),
    ("a child rides a bike", "the stock market fell today", 0.0),
    ("a cat sleeps on a sofa", "a cat is sleeping on the couch", 4.4),
]


def write_stsb(folder):
    """A tiny STS-B-format folder: genre, file, year, id, score, sentence 1, sentence 2."""
    folder.mkdir()
    for split in ("train", "dev", "test"):
        lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}"
                 for i, (a, b, s) in enumerate(SENTENCES)]  # fmt: skip
        (folder / f"sts-{split}.csv").write_text("\n".join(lines) + "\n", "utf-8")
    return folder


RECIPE = {
    "seed": 0,
    "data": {"name": "stsb"},
    "encoder": {"name": "text_rnn", "params": {"embedding_size": 16, "hidden_size": 16}},
    "loss": {"name": "cosent"},
    "batches": {"batch_size": 4},
    "training": {"epochs": 2, "lr": 0.01},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    data = write_stsb(tmp / "stsb")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(RECIPE))
    out = tmp / "run"
    assert main(["train", str(config), "--out", str(out), "--data-dir", str(data)]) == 0
    return tmp, out / "model"


def test_train_text_writes_a_loadable_model_folder(trained, capsys):
    tmp, model = trained
    for name in ("config.json", "model.safetensors", "vocab.json"):
        assert (model / name).is_file()
    report = json.loads((model.parent / "report.json").read_text())
    assert report["epochs_run"] == 2 and "spearman" in report["test"]
    loaded = siamkit.load(model)
    assert loaded.threshold is not None and loaded.config.extra["task"] == "text"
    assert loaded.score(["a man plays a guitar"], ["a dog runs"]).shape == (1,)


def test_similarity_command(trained, capsys):
    _, model = trained
    assert main(["similarity", str(model), "a man plays a guitar", "a man plays a guitar"]) == 0
    out = capsys.readouterr().out
    assert "1.0000" in out and "similar" in out


def test_match_text_ranks_identical_reference_first_and_reuses_index(trained, capsys):
    tmp, model = trained
    refs = tmp / "refs.txt"
    refs.write_text("a dog runs in the park\na man plays a guitar\n\nshares dropped sharply\n")
    index = tmp / "index"
    for _ in range(2):  # second call reuses the stored index
        args = ["match-text", str(model), "a man plays a guitar", "--references", str(refs),
                "-k", "2", "--index", str(index)]  # fmt: skip
        assert main(args) == 0
        out = capsys.readouterr().out
        first = next(line for line in out.splitlines() if "│ 1 " in line)
        assert "a man plays a guitar" in first and "1.0000" in first
    assert (index / "items.sqlite").is_file()
    refs.write_text("only one\n")
    assert main(["match-text", str(model), "q", "--references", str(refs),
                 "--index", str(index)]) == 1  # fmt: skip
    assert "holds 3 texts" in capsys.readouterr().err


def test_classify_text_command(trained, capsys):
    tmp, model = trained
    refs = tmp / "labelled.tsv"
    refs.write_text("music\ta man plays a guitar\nfood\ta woman cuts an onion\n")
    for method in ("prototype", "knn"):
        args = ["classify-text", str(model), "a man plays a guitar", "--references", str(refs),
                "--method", method, "-k", "1"]  # fmt: skip
        assert main(args) == 0
        assert "music" in capsys.readouterr().out
    assert main(["classify-text", str(model), "x", "--references", str(refs),
                 "--method", "svm"]) == 1  # fmt: skip
    assert "--method" in capsys.readouterr().err


def test_paraphrase_calibrate_save_and_decide(trained, capsys):
    tmp, model = trained
    pairs = tmp / "pairs.tsv"
    pairs.write_text("".join(f"{int(s >= 4)}\t{a}\t{b}\n" for a, b, s in SENTENCES))
    args = ["paraphrase", str(model), "--train", str(pairs), "--test", str(pairs), "--save"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at 80 columns
    assert "accuracy" in out and "threshold saved" in out
    saved = json.loads((model / "config.json").read_text())["threshold"]
    assert saved == pytest.approx(siamkit.load(model).threshold)
    assert main(["paraphrase", str(model), "a man plays a guitar", "a man plays a guitar"]) == 0
    assert "paraphrase" in capsys.readouterr().out
    assert main(["paraphrase", str(model), "only one text"]) == 1
    assert "two texts" in capsys.readouterr().err


def test_text_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RECIPE, "data": {"name": "stsb", "params": {"split": 1}}}))
    assert main(["train-text", str(bad)]) == 1  # the alias of train
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "data.params.split" in err and len(err.strip().splitlines()) == 1
    assert main(["similarity", str(tmp_path / "nope"), "a", "b"]) == 1
    assert "not a model folder" in capsys.readouterr().err


def write_mrpc(folder, pairs=SENTENCES):
    """A tiny MRPC-format folder (train and test files): paraphrase = STS score >= 4."""
    folder.mkdir(exist_ok=True)
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    body = "".join(f"{int(s >= 4)}\t{i}\t{i + 100}\t{a}\t{b}\n"
                   for i, (a, b, s) in enumerate(pairs))  # fmt: skip
    for name in ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt"):
        (folder / name).write_text(header + body, "utf-8")
    return folder


def test_eval_recognises_stsb_and_mrpc_folders(trained, capsys):
    tmp, model = trained
    assert main(["eval", str(model), str(tmp / "stsb")]) == 0
    out = capsys.readouterr().out
    assert "STS Benchmark" in out and "spearman" in out and "test" in out
    mrpc = write_mrpc(tmp / "mrpc")
    assert main(["eval", str(model), str(mrpc)]) == 0
    out = capsys.readouterr().out
    assert "MRPC" in out and "f1" in out


def test_extra_train_pairs_join_the_vocabulary_and_the_batches(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    root.mkdir()
    news = [("shares of acme rose", "acme stock climbed", 5.0)] * 12 + [
        ("shares of acme rose", "a zebra grazes", 0.0)] * 12  # fmt: skip
    write_mrpc(root / "mrpc", news)
    monkeypatch.setenv("SIAMKIT_DATA", str(root))
    recipe = parse_recipe({**RECIPE, "data": {"name": "stsb", "params": {"extra_train": "mrpc"}}})
    result = run_recipe(recipe, tmp_path / "run", data_dir=write_stsb(tmp_path / "stsb"),
                        show_progress=False)  # fmt: skip
    vocabulary = siamkit.load(result.model_dir).network.encoder.vocabulary
    assert "zebra" in vocabulary.words and "guitar" in vocabulary.words
    # 8 STS-B pairs and 90% of 24 MRPC pairs (the rest is MRPC's validation) in batches of 4
    assert result.history.epochs[0]["steps"] == 2 + 6
    with pytest.raises(ConfigError, match="another dataset"):
        parse_recipe({**RECIPE, "data": {"name": "stsb", "params": {"extra_train": "stsb"}}})


def test_train_runs_a_paraphrase_recipe_with_f1_threshold_and_last_epoch(tmp_path, capsys):
    recipe = {**RECIPE, "data": "mrpc", "training": {"epochs": 3, "lr": 0.01},
              "evaluation": {"threshold_rule": "f1", "keep": "last"}}  # fmt: skip
    config = tmp_path / "mrpc.yaml"
    config.write_text(yaml.safe_dump(recipe))
    args = ["train", str(config), "--out", str(tmp_path / "run"), "--data-dir"]
    assert main([*args, str(write_mrpc(tmp_path / "mrpc"))]) == 0
    assert "mrpc test split" in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["epochs_run"] == 3 and {"accuracy", "f1"} <= set(report["test"])
    saved = siamkit.load(tmp_path / "run" / "model").config.extra["recipe"]["evaluation"]
    assert (saved["monitor"], saved["threshold_rule"], saved["keep"]) == ("auc", "f1", "last")
    kept = load_tensors(tmp_path / "run" / "model" / "model.safetensors")
    last = last_epoch_weights(tmp_path / "run")
    assert kept.keys() == last.keys() and all(torch.equal(kept[k], last[k]) for k in kept)
