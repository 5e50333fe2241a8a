"""split_data: counts, groups, determinism, safety of the source, corrupt files, resume, modes."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from conftest import digest_tree
from ga import layouts, splitting
from ga.cli import split_main
from ga.errors import DataError
from ga.splitting import read_manifest, split_dataset, target_counts


def _img(rng, size=(28, 24)):
    base = rng.random((size[1] // 4 + 1, size[0] // 4 + 1)) * 255
    im = Image.fromarray(base.astype(np.uint8)).resize(size, Image.BICUBIC)
    return np.asarray(im.convert("RGB"))


def _save(arr, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def make_tree(root, per_class=None, groups=None, seed=0):
    """Class folders of distinct images; `groups` = {class: [group sizes]} makes rotated copies."""
    rng = np.random.default_rng(seed)
    per_class = per_class or {}
    groups = groups or {}
    for cls in sorted(set(per_class) | set(groups)):
        n = 1
        for _ in range(per_class.get(cls, 0)):
            _save(_img(rng), os.path.join(root, cls, f"{cls.upper()} ({n}).png"))
            n += 1
        for size in groups.get(cls, []):
            base = _img(rng)
            for k in range(size):
                arr = np.rot90(base, k % 4)
                arr = np.fliplr(arr) if k >= 4 else arr
                _save(np.ascontiguousarray(arr), os.path.join(root, cls, f"{cls.upper()} ({n}).png"))
                n += 1
    return root


def _split_of(dest):
    return {f.source: f.split for f in read_manifest(os.path.join(dest, "manifest.csv"))}


@pytest.mark.parametrize("n, want", [(40, [28, 10, 2]), (23, [16, 6, 1]), (100, [70, 25, 5]), (3, [1, 1, 1]),
                                     (7, [5, 1, 1])])
def test_target_counts_largest_remainder(n, want):
    got = target_counts(n, [0.70, 0.25, 0.05])
    assert got == want and sum(got) == n


def test_exact_counts_without_groups(tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 40, "pg": 23})
    res = split_dataset(src, str(tmp_path / "out"), progress=False)
    assert res.counts["cex"] == {"train": 28, "valid": 10, "test": 2}
    assert res.counts["pg"] == {"train": 16, "valid": 6, "test": 1}
    for s, n in (("train", 28), ("valid", 10), ("test", 2)):
        assert len(os.listdir(tmp_path / "out" / s / "cex")) == n
    assert res.exit_code == 0


def test_hidden_files_and_folders_are_left_out_of_the_split(tmp_path):
    """docs/data.md, "The split": names starting with "." (a notebook's .ipynb_checkpoints/, an editor's
    .DS_Store or a hidden image) are neither split, listed nor taken as a class."""
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 10, "pg": 10})
    rng = np.random.default_rng(9)
    _save(_img(rng), os.path.join(src, "cex", ".ipynb_checkpoints", "CEX (1)-checkpoint.png"))
    _save(_img(rng), os.path.join(src, "pg", ".hidden.png"))
    _save(_img(rng), os.path.join(src, ".ipynb_checkpoints", "stray.png"))
    open(os.path.join(src, "cex", ".DS_Store"), "wb").write(b"\0\1")
    res = split_dataset(src, str(tmp_path / "out"), progress=False)
    assert sorted(res.counts) == ["cex", "pg"] and all(sum(c.values()) == 10 for c in res.counts.values())
    listed = [f.source for f in read_manifest(os.path.join(tmp_path / "out", "manifest.csv"))]
    assert len(listed) == 20 and not any("/." in "/" + name for name in listed), listed
    copied = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "out") for f in fs if f.endswith(".png")]
    assert len(copied) == 20 and not any(os.sep + "." in p for p in copied)
    assert res.exit_code == 0


def test_groups_stay_together_and_counts_stay_close(tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 30}, groups={"pg": [5] * 8 + [3, 2, 1, 1]})
    res = split_dataset(src, str(tmp_path / "out"), progress=False)
    files = read_manifest(str(tmp_path / "out" / "manifest.csv"))
    pg = [f for f in files if f.cls == "pg"]
    by_group = {}
    for f in pg:
        by_group.setdefault(f.group, set()).add(f.split)
    assert len(by_group) == 12  # every rotated set detected as one group
    assert all(len(s) == 1 for s in by_group.values())
    targets = target_counts(len(pg), [0.70, 0.25, 0.05])
    for s, t in zip(("train", "valid", "test"), targets):
        assert abs(res.counts["pg"][s] - t) <= 5
    assert res.groups["pg"] == 12 and res.groups["cex"] == 30


def test_near_identical_copy_joins_the_group(tmp_path):
    rng = np.random.default_rng(3)
    base = _img(rng, (60, 50))
    noisy = np.clip(np.rot90(base).astype(int) + rng.integers(-3, 4, np.rot90(base).shape), 0, 255).astype(np.uint8)
    root = tmp_path / "src"
    _save(base, str(root / "pg" / "PG (1).png"))
    _save(np.ascontiguousarray(noisy), str(root / "pg" / "PG (2).png"))
    for i in range(3, 9):
        _save(_img(rng, (60, 50)), str(root / "pg" / f"PG ({i}).png"))
    files = [splitting._scan_one(str(root), f"pg/PG ({i}).png", "pg") for i in range(1, 9)]
    splitting.assign_groups(files)
    assert files[0].group == files[1].group
    assert len({f.group for f in files}) == 7


def test_seed_determines_the_split(tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 30, "pg": 30})
    split_dataset(src, str(tmp_path / "a"), seed=1, progress=False)
    split_dataset(src, str(tmp_path / "b"), seed=1, progress=False)
    split_dataset(src, str(tmp_path / "c"), seed=2, progress=False)
    a = open(tmp_path / "a" / "manifest.csv").read()
    assert a == open(tmp_path / "b" / "manifest.csv").read()
    assert _split_of(str(tmp_path / "a")) != _split_of(str(tmp_path / "c"))


def test_sorted_order_reproduces_the_sequential_cut(tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 20, "pg": 20})
    split_dataset(src, str(tmp_path / "out"), order="sorted", progress=False)
    splits = _split_of(str(tmp_path / "out"))
    names = sorted(k for k in splits if k.startswith("cex/"))
    assert [splits[n] for n in names] == ["train"] * 14 + ["valid"] * 5 + ["test"] * 1


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_source_unchanged_and_no_hash_in_two_splits(tmp_path, mode):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 12}, groups={"pg": [4, 4, 3, 2, 2]})
    # A byte-identical duplicate must share its original's split.
    data = open(os.path.join(src, "cex", "CEX (1).png"), "rb").read()
    open(os.path.join(src, "cex", "CEX (99).png"), "wb").write(data)
    before = digest_tree(src)
    split_dataset(src, str(tmp_path / "out"), mode=mode, progress=False)
    assert digest_tree(src) == before
    files = read_manifest(str(tmp_path / "out" / "manifest.csv"))
    where = {}
    for f in files:
        where.setdefault(f.sha256, set()).add(f.split)
    assert all(len(s) == 1 for s in where.values())
    dup = [f for f in files if f.source == "cex/CEX (99).png"][0]
    assert dup.status == "duplicate" and "CEX (1).png" in dup.reason
    out = digest_tree(str(tmp_path / "out"))
    for f in files:
        assert out[os.path.join(f.split, *f.source.split("/"))] == f.sha256


def test_corrupt_files_listed_not_copied(tmp_path, capsys):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 10, "pg": 10})
    good = open(os.path.join(src, "cex", "CEX (1).png"), "rb").read()
    open(os.path.join(src, "cex", "zero.png"), "wb").close()
    open(os.path.join(src, "cex", "trunc.png"), "wb").write(good[: len(good) // 2])
    open(os.path.join(src, "pg", "text.png"), "w").write("not an image")
    open(os.path.join(src, "pg", "notes.txt"), "w").write("lab notes")
    assert split_main(["--source", src, "--dest", str(tmp_path / "out"), "--no-progress"]) == 1
    rows = {f.source: f for f in read_manifest(str(tmp_path / "out" / "manifest.csv"))}
    assert rows["cex/zero.png"].status == "corrupt" and "empty" in rows["cex/zero.png"].reason
    assert rows["cex/trunc.png"].status == "corrupt"
    assert rows["pg/text.png"].status == "corrupt"
    assert rows["pg/notes.txt"].status == "skipped-not-image"
    copied = digest_tree(str(tmp_path / "out"))
    assert not any(os.path.basename(k) in ("zero.png", "trunc.png", "text.png", "notes.txt") for k in copied)
    err = capsys.readouterr().err
    assert "cex/trunc.png" in err and "pg/notes.txt" in err
    assert sum(1 for f in rows.values() if f.cls == "cex" and f.usable) == 10


def test_rerun_is_idempotent(tmp_path, capsys):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 10, "pg": 10})
    split_dataset(src, str(tmp_path / "out"), progress=False)
    stamp = {p: os.stat(os.path.join(tmp_path / "out", p)).st_mtime_ns for p in digest_tree(str(tmp_path / "out"))}
    capsys.readouterr()
    res = split_dataset(src, str(tmp_path / "out"), progress=False)
    assert not res.changed and res.state == "unchanged"
    assert split_main(["--source", src, "--dest", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    after = {p: os.stat(os.path.join(tmp_path / "out", p)).st_mtime_ns for p in digest_tree(str(tmp_path / "out"))}
    assert after == stamp


def test_different_split_needs_overwrite(tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 10, "pg": 10})
    split_dataset(src, str(tmp_path / "out"), seed=1, progress=False)
    with pytest.raises(DataError, match="different split"):
        split_dataset(src, str(tmp_path / "out"), seed=2, progress=False)
    split_dataset(src, str(tmp_path / "out"), seed=2, overwrite=True, progress=False)
    files = read_manifest(str(tmp_path / "out" / "manifest.csv"))
    on_disk = digest_tree(str(tmp_path / "out"))
    placed = {k for k in on_disk if k.endswith(".png")}
    assert placed == {os.path.join(f.split, *f.source.split("/")) for f in files}  # no stale files


def test_interrupted_copy_is_completed(tmp_path, monkeypatch):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 15, "pg": 15})
    real_place = splitting._place
    calls = {"n": 0}

    def flaky(s, d, mode, sha):
        calls["n"] += 1
        if calls["n"] == 9:
            # Die half-way through a file: a partial temporary file is left behind.
            open(os.path.join(os.path.dirname(d), "." + os.path.basename(d) + ".x.tmp.png"), "wb").write(b"\x89PN")
            raise KeyboardInterrupt
        return real_place(s, d, mode, sha)

    monkeypatch.setattr(splitting, "_place", flaky)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(src, str(tmp_path / "out"), progress=False)
    monkeypatch.setattr(splitting, "_place", real_place)
    res = split_dataset(src, str(tmp_path / "out"), progress=False)
    assert res.changed
    files = read_manifest(str(tmp_path / "out" / "manifest.csv"))
    on_disk = digest_tree(str(tmp_path / "out"))
    images = {k: v for k, v in on_disk.items() if k.endswith(".png")}
    assert images == {os.path.join(f.split, *f.source.split("/")): f.sha256 for f in files}


def test_move_mode_moves_each_file_once(tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 10}, groups={"pg": [3, 3, 2, 2]})
    before = digest_tree(src)
    split_dataset(src, str(tmp_path / "out"), mode="move", progress=False)
    left = [k for k in digest_tree(src)]
    assert left == []
    files = read_manifest(str(tmp_path / "out" / "manifest.csv"))
    out = digest_tree(str(tmp_path / "out"))
    for f in files:
        assert out[os.path.join(f.split, *f.source.split("/"))] == before[os.path.join(*f.source.split("/"))]


def test_multilabel_split(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "g"
    rows = []
    for i in range(60):
        name = f"flake_{i:03d}.png"
        _save(_img(rng), str(src / name))
        rows.append([name, int(i % 3 == 0), int(i % 4 == 0), int(i % 5 == 0)])
    with open(src / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "class1", "class2", "class3"], *rows])
    res = split_dataset(str(src), str(tmp_path / "out"), progress=False)
    assert res.exit_code == 0
    seen = []
    for s in ("train", "valid", "test"):
        lab = list(csv.reader(open(tmp_path / "out" / s / "labels.csv")))
        assert lab[0] == ["filename", "class1", "class2", "class3"]
        for name, *flags in lab[1:]:
            assert (tmp_path / "out" / s / name).is_file()
            assert [int(v) for v in flags] == [r[1:] for r in rows if r[0] == name][0]
            seen.append(name)
    assert sorted(seen) == sorted(r[0] for r in rows)
    # Stratified on the label combination: the empty combination appears in every split.
    assert all(res.counts[""][s] > 0 for s in ("train", "valid", "test"))


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda root: None, "source folder not found"),
        (lambda root: (make_tree(root, per_class={"cex": 5}), os.makedirs(os.path.join(root, "pg"))), "class folder is empty"),
        (lambda root: make_tree(root, per_class={"cex": 5, "pg": 2}), "fewer than the 3 splits"),
        (lambda root: os.makedirs(root), "no class folders"),
    ],
)
def test_split_errors_exit_2(tmp_path, capsys, setup, needle):
    root = str(tmp_path / "src")
    setup(root)
    code = split_main(["--source", root, "--dest", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_dry_run_writes_nothing(tmp_path, capsys):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 10, "pg": 10})
    code = split_main(["--source", src, "--dest", str(tmp_path / "out"), "--dry-run", "--no-progress"])
    assert code == 0 and not (tmp_path / "out").exists()
    assert "dry run" in capsys.readouterr().out


def test_hostile_contents_are_rejected_listed_and_never_followed(tmp_path, capsys):
    src = make_tree(str(tmp_path / "src"), per_class={"cex": 8, "pg": 8})
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(outside)
    os.symlink(outside, os.path.join(src, "cex", "link.png"))
    good = open(os.path.join(src, "cex", "CEX (1).png"), "rb").read()
    open(os.path.join(src, "pg", "new\nline.png"), "wb").write(good)
    open(os.fsdecode(os.path.join(os.fsencode(src), b"pg", b"bad\xff.png")), "wb").write(good)
    bomb = os.path.join(src, "pg", "bomb.png")
    Image.new("1", (12000, 10000)).save(bomb)  # 120 Mpx of 1-bit pixels, a few kB on disk
    res = split_dataset(src, str(tmp_path / "out"), progress=False)
    assert res.exit_code == 1
    rows = {f.source: f for f in read_manifest(str(tmp_path / "out" / "manifest.csv"))}
    assert rows["cex/link.png"].status == "rejected" and "link" in rows["cex/link.png"].reason
    assert rows["pg/new\\nline.png"].status == "rejected" and "control" in rows["pg/new\\nline.png"].reason
    bad = [r for k, r in rows.items() if k.startswith("pg/bad")]
    assert len(bad) == 1 and bad[0].status == "rejected" and "UTF-8" in bad[0].reason
    assert rows["pg/bomb.png"].status == "corrupt" and "limit" in rows["pg/bomb.png"].reason
    placed = [f for _, _, fs in os.walk(tmp_path / "out") for f in fs if f.endswith(".png")]
    assert len(placed) == 16 and "secret.png" not in placed
    # Re-running the same split recognises every listed name and changes nothing.
    assert not split_dataset(src, str(tmp_path / "out"), progress=False).changed


def test_labels_csv_rows_outside_the_source_are_rejected(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "g"
    rows = []
    for i in range(12):
        _save(_img(rng), str(src / f"f{i}.png"))
        rows.append([f"f{i}.png", i % 2, 0])
    rows.append(["../outside.png", 1, 0])
    with open(src / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "a", "b"], *rows])
    res = split_dataset(str(src), str(tmp_path / "out"), progress=False)
    listed = {f.source: f for f in read_manifest(str(tmp_path / "out" / "manifest.csv"))}
    assert listed["../outside.png"].status == "rejected" and "outside" in listed["../outside.png"].reason
    assert res.exit_code == 1


def test_the_studys_own_layout_is_a_source(tmp_path, capsys):
    """GA{train,valid,test}Binary/{0,1} (the study's moved split) is read as one pool, the
    folders named by data.class_names, and split again leakage-aware."""
    study = tmp_path / "study"
    for part, counts in (("GAtrainBinary", (14, 2)), ("GAvalidBinary", (5, 1)), ("GAtestBinary", (1, 0))):
        flat = make_tree(str(tmp_path / f"flat_{part}"), per_class={"0": counts[0]}, seed=len(part) + counts[0])
        for i, name in enumerate(sorted(os.listdir(os.path.join(flat, "0")))):
            _save(np.asarray(Image.open(os.path.join(flat, "0", name))), str(study / part / "0" / f"{part} c {i}.png"))
    make_tree(str(study / "GAtrainBinary"), groups={"1": [5, 5, 5]}, seed=9)
    dest = tmp_path / "split"
    code = split_main(["--source", str(study), "--dest", str(dest), "--set", "data.class_names=[cex,pg]",
                       "--no-progress"])
    assert code == 0, capsys.readouterr().err
    files = read_manifest(str(dest / "manifest.csv"))
    assert len(files) == 20 + 15 and {f.cls for f in files} == {"cex", "pg"}
    for f in files:
        part, folder, name = f.source.split("/")
        assert part in layouts.STUDY_FOLDERS and f.cls == ["cex", "pg"][int(folder)]
        assert f.placed == f"{f.cls}/{name}" and os.path.isfile(dest / f.split / f.cls / name)
    assert sorted(os.listdir(dest / "train")) == ["cex", "pg"]
    # The rotated copies of one crop are together, wherever the study had put them.
    assert len({(f.group, f.split) for f in files if f.cls == "pg"}) == 3
    assert split_main(["--source", str(study), "--dest", str(dest), "--set", "data.class_names=[cex,pg]"]) == 0
    assert "nothing to do" in capsys.readouterr().out
