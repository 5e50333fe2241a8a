"""ga.layouts: every labelled on-disk layout, read in one place, in-process."""

import os

import numpy as np
import pytest
from PIL import Image

from ga import layouts
from ga.errors import DataError
from ga.splitting import read_manifest, split_dataset


def _png(path, value=100, size=(20, 20)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _labels(folder, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "labels.csv"), "w", encoding="utf-8") as fh:
        fh.write(text)


def test_class_folders_numbered_folders_and_the_studys_split_folders(tmp_path):
    for cls in ("cex", "pg"):
        _png(str(tmp_path / "plain" / cls / "a.png"))
        _png(str(tmp_path / "numbered" / str(["cex", "pg"].index(cls)) / "a.png"))
        _png(str(tmp_path / "study" / "GAtrainBinary" / str(["cex", "pg"].index(cls)) / f"{cls}.png"))
    plain = layouts.list_source(str(tmp_path / "plain"))
    assert plain.classes == ["cex", "pg"] and plain.items[0] == ("cex/a.png", "cex", "cex/a.png")
    assert plain.labels is None and not plain.multilabel
    numbered = layouts.list_source(str(tmp_path / "numbered"), class_names=["cex", "pg"])
    assert numbered.classes == ["cex", "pg"] and numbered.items[1] == ("1/a.png", "pg", "pg/a.png")
    study = layouts.list_source(str(tmp_path / "study"), class_names=["cex", "pg"])
    assert [i[1:] for i in study.items] == [("cex", "cex/cex.png"), ("pg", "pg/pg.png")]
    assert layouts.find_classes(str(tmp_path / "numbered"), "binary", ["cex", "pg"]) == ["cex", "pg"]
    paths, y = layouts.labelled_images(str(tmp_path / "numbered"), ["cex", "pg"], "binary", ["cex", "pg"])
    assert [os.path.basename(os.path.dirname(p)) for p in paths] == ["0", "1"] and y.tolist() == [[0.0], [1.0]]


def test_a_label_column_gives_binary_and_multiclass_labels(tmp_path):
    folder = str(tmp_path / "d")
    for n in ("a", "b", "c"):
        _png(os.path.join(folder, f"{n}.png"))
    _labels(folder, "filename,label\nc.png,plate\na.png,cex\nb.png,pg\n")
    listing = layouts.list_source(folder)
    assert listing.classes == ["cex", "pg", "plate"] and listing.columns == ["label"] and not listing.multilabel
    assert sorted(listing.items) == [("a.png", "cex", "a.png"), ("b.png", "pg", "b.png"), ("c.png", "plate", "c.png")]
    assert layouts.find_classes(folder, "multiclass") == ["cex", "pg", "plate"]
    paths, y = layouts.labelled_images(folder, ["cex", "pg", "plate"], "multiclass")
    assert [os.path.basename(p) for p in paths] == ["c.png", "a.png", "b.png"]
    assert y.argmax(axis=1).tolist() == [2, 0, 1]
    with pytest.raises(DataError, match="set model.task: multiclass"):
        layouts.find_classes(folder, "binary")
    with pytest.raises(DataError, match="a multilabel task needs a 0/1 column per class"):
        layouts.find_classes(folder, "multilabel")
    with pytest.raises(DataError, match=r"line 2: class 'plate' is not one of the run's classes \['cex', 'pg'\]"):
        layouts.labelled_images(folder, ["cex", "pg"], "binary")


def test_zero_one_columns_give_multilabel_labels_with_any(tmp_path):
    folder = str(tmp_path / "g")
    _labels(folder, "filename,class1,class2\na.png,1,0\nb.png,0,0\n")
    assert layouts.find_classes(folder, "multilabel", any_class=True) == ["class1", "class2", "any"]
    paths, y = layouts.labelled_images(folder, ["class1", "class2", "any"], "multilabel", any_class=True)
    assert y.tolist() == [[1, 0, 1], [0, 0, 0]]
    with pytest.raises(DataError, match="columns"):
        layouts.labelled_images(folder, ["x", "y"], "multilabel")
    with pytest.raises(DataError, match="one class per image: filename,label"):
        layouts.labelled_images(folder, ["class1", "class2"], "binary")
    os.remove(os.path.join(folder, "labels.csv"))
    with pytest.raises(DataError, match="has no labels.csv"):
        layouts.find_classes(folder, "multilabel")


@pytest.mark.parametrize("text, message", [
    ("name,label\na.png,cex\n", "the header must be"),
    ("filename,label\na.png,\n", "line 2: expected a file name and its class"),
    ("filename,label\na.png,cex\nb.png,pg\na.png,pg\n", "line 4: a.png is listed twice \\(first on line 2\\)"),
    ("filename,c1,c2\na.png,1,2\n", "line 2: expected a file name and 2 values of 0 or 1"),
])
def test_label_file_checks_name_the_line(tmp_path, text, message):
    _labels(str(tmp_path), text)
    with pytest.raises(DataError, match=message):
        layouts.read_labels_csv(str(tmp_path))


def test_a_label_column_dataset_splits_into_labels_csv_per_split(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        cls = ["cex", "pg"][i % 2]
        arr = (rng.random((6, 6)) * 255).astype(np.uint8)
        Image.fromarray(arr).resize((24, 24), Image.BICUBIC).convert("RGB").save(_mk(src / f"i{i:02d}.png"))
        rows.append(f"i{i:02d}.png,{cls}")
    rows.append("gone.png,pg")
    _labels(str(src), "filename,label\n" + "\n".join(rows) + "\n")
    result = split_dataset(str(src), str(tmp_path / "out"), progress=False)
    assert result.exit_code == 1 and [f.source for f in result.unused] == ["gone.png"]
    assert set(result.counts) == {"cex", "pg"} and sum(sum(c.values()) for c in result.counts.values()) == 24
    manifest = {f.source: f for f in read_manifest(str(tmp_path / "out" / "manifest.csv"))}
    assert manifest["gone.png"].status == "rejected" and "no such file" in manifest["gone.png"].reason
    for s in ("train", "valid", "test"):
        table = layouts.read_labels_csv(str(tmp_path / "out" / s))
        assert table.single and all(manifest[n].cls == v[0] and manifest[n].split == s for n, v in table.rows.items())
    # A re-run finds the same split and rewrites nothing.
    again = split_dataset(str(src), str(tmp_path / "out"), progress=False)
    assert again.state == "unchanged" and not again.changed


def _mk(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return str(path)


def test_unlabelled_images_ignore_labels(tmp_path):
    _png(str(tmp_path / "x" / "a.png"))
    _png(str(tmp_path / "x" / "sub" / "b.png"))
    _labels(str(tmp_path / "x"), "filename,label\na.png,cex\n")
    assert [os.path.basename(p) for p in layouts.unlabelled_images(str(tmp_path / "x"))] == ["a.png", "b.png"]
    with pytest.raises(DataError, match="folder not found"):
        layouts.unlabelled_images(str(tmp_path / "none"))
