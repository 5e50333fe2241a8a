"""Label review: `ga review` and `inference.py --review` find a planted mislabel and a copy
across classes, write the gallery and a labels.csv that feeds back, and touch no image."""

import os
import shutil

from conftest import digest_tree
from helpers import read_csv, run_here
from ga.cli import inference_main


def _planted(separable_split, root):
    """The separable test split with one cex crop moved under pg and one cex crop copied there."""
    folder = root / "labelled"
    shutil.copytree(os.path.join(separable_split, "test"), folder)
    shutil.move(folder / "cex" / "cex test 003.png", folder / "pg" / "planted.png")
    shutil.copy(folder / "cex" / "cex test 004.png", folder / "pg" / "twin.png")
    return folder


def test_ga_review_ranks_a_planted_mislabel_first(trained_run, separable_split, tmp_path):
    folder = _planted(separable_split, tmp_path)
    before = digest_tree(str(folder))
    out = tmp_path / "review"
    proc = run_here("-m", "ga", "review", folder, "--model", trained_run, "--out-dir", out, "--gradcam", "3")
    assert "likely mislabel" in proc.stdout and "planted.png" in proc.stdout
    rows = read_csv(out / "review.csv")
    assert len(rows) == 19 and [int(r["rank"]) for r in rows] == list(range(1, 20))
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    top = {os.path.basename(r["path"]): r for r in rows[:3]}
    assert "planted.png" in top
    planted = top["planted.png"]
    assert "mislabel" in planted["flags"] and planted["suggested_label"] == "cex" and planted["label"] == "pg"
    twin = next(r for r in rows if r["path"].endswith("twin.png"))
    # a copy of a cex crop labelled pg: flagged as a copy across classes (and, here, as a mislabel too)
    assert "near-duplicate" in twin["flags"] and twin["duplicate_of"] == "cex/cex test 004.png"
    assert not any(r["suggested_label"] for r in rows if "mislabel" not in r["flags"])
    page = (out / "review.html").read_text()
    assert page.count("<details><summary>Grad-CAM") == 3 and page.count('class="card') == 19
    assert digest_tree(str(folder)) == before  # no image moved or changed
    import ga  # the API gives the same ranking

    api_rows = ga.review(folder, trained_run, out_dir=tmp_path / "api", gradcam=0)
    assert [r["path"] for r in api_rows] == [r["path"] for r in rows]

    # Feeding the corrections back: labels.csv in the folder wins over the class folders
    labels = {r["filename"]: r["label"] for r in read_csv(out / "labels.csv")}
    assert labels["pg/planted.png"] == labels["pg/twin.png"] == "cex" and len(labels) == 19
    assert sum(labels[n] != n.split("/")[0] for n in labels) == sum("mislabel" in r["flags"] for r in rows)
    shutil.copy(out / "labels.csv", folder / "labels.csv")
    assert inference_main([str(folder), "--evaluate", "--model", trained_run, "--out-dir", str(tmp_path / "eval"),
                           "-q"]) == 0
    evaluated = {os.path.basename(r["path"]): r for r in read_csv(tmp_path / "eval" / "predictions.csv")}
    assert evaluated["planted.png"]["true"] == "cex"


def test_inference_review_of_a_split_folder(trained_run, separable_split, tmp_path, capsys):
    out = tmp_path / "review"
    assert inference_main([separable_split, "--review", "--model", trained_run, "--out-dir", str(out), "-q"]) == 0
    rows = read_csv(out / "review.csv")
    assert {r["split"] for r in rows} == {"train", "valid", "test"} and len(rows) == 66
    for split in ("train", "valid", "test"):
        names = [r["filename"] for r in read_csv(out / split / "labels.csv")]
        assert len(names) == len(os.listdir(os.path.join(separable_split, split, "cex"))) + \
            len(os.listdir(os.path.join(separable_split, split, "pg")))
    assert "66 images reviewed" in capsys.readouterr().out


def test_review_of_a_folder_without_labels_is_one_line(trained_run, tmp_path):
    (tmp_path / "flat").mkdir()
    proc = run_here("inference.py", tmp_path / "flat", "--review", "--model", trained_run, expect=2)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in proc.stderr
