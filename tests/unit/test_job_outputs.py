"""jobs/_common.py's output directories without a JVM: only a directory carrying sparkopt's
marker is ever replaced, and the replacement is write-beside, move aside, swap, delete, so a
kill between any two steps leaves a complete output (old or new) that a rerun finds."""
import json
import os
import shutil

import pytest

import _common
from _common import OUTPUT_MARKER, JobError, check_output_target, new_output, replace_output


def _foreign(path):
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "data.csv").write_text("1,2\n")
    return path


def _snapshot(path):
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


def _write(output, text, job="test"):
    """One output holding result.txt = text, through the jobs' own steps."""
    staging = new_output(output, job, {"note": text})
    (staging / "result.txt").write_text(text)
    replace_output(staging, output)


def test_a_foreign_directory_is_refused_and_untouched(tmp_path):
    target = _foreign(tmp_path / "mine")
    before = _snapshot(target)
    with pytest.raises(JobError, match=f"{target}.*not a sparkopt output.*{OUTPUT_MARKER}"):
        check_output_target(target)
    with pytest.raises(JobError, match="not a sparkopt output"):
        _write(target, "new")
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]      # no staging left beside it


@pytest.mark.parametrize("name", [".", "..", "", "sub/.."])
def test_the_working_directory_and_its_parents_are_refused(tmp_path, monkeypatch, name):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub" if name != "sub/.." else tmp_path)
    with pytest.raises(JobError, match="working directory"):
        check_output_target(name or ".")
    with pytest.raises(JobError, match="working directory"):
        check_output_target("/")


def test_a_file_or_a_symlink_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(JobError, match="not a directory"):
        check_output_target(tmp_path / "afile")
    _write(tmp_path / "real", "ours")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(JobError, match="symbolic link"):
        check_output_target(tmp_path / "link")


def test_a_marker_that_is_not_ours_is_refused(tmp_path):
    for i, content in enumerate(["not json", json.dumps({"format": "other"}), json.dumps([1])]):
        target = tmp_path / f"o{i}"
        target.mkdir()
        (target / OUTPUT_MARKER).write_text(content)
        with pytest.raises(JobError, match="not a sparkopt output"):
            check_output_target(target)
    target = tmp_path / "dirmarker"
    (target / OUTPUT_MARKER).mkdir(parents=True)
    with pytest.raises(JobError, match="not a sparkopt output"):
        check_output_target(target)


def test_new_and_empty_targets_are_accepted(tmp_path):
    _write(tmp_path / "fresh" / "o", "one")
    assert (tmp_path / "fresh" / "o" / "result.txt").read_text() == "one"
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", "two")
    assert (tmp_path / "empty" / "result.txt").read_text() == "two"


def test_an_output_carries_the_marker_and_is_replaced(tmp_path):
    out = tmp_path / "o"
    _write(out, "old", job="train.py")
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["format"] == "sparkopt-output" and marker["job"] == "train.py" and marker["note"] == "old"
    check_output_target(out)                     # ours: accepted
    (out / "stale.txt").write_text("from the old run")
    _write(out, "new")
    assert (out / "result.txt").read_text() == "new"
    assert not (out / "stale.txt").exists()      # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


# where the swap is interrupted -> what the output path holds right after, and after the next run's recovery
CRASHES = {
    "aside": ("old", "old"),             # moving the old output aside fails: nothing moved
    "swap": ("old", "old"),              # the swap fails: the old output is moved back at once
    "swap-kill": (None, "new"),          # killed after the move aside (no rollback): recovery takes the new one
    "delete": ("new", "new"),            # killed while deleting the old output
}


@pytest.mark.parametrize("crash_at", sorted(CRASHES))
def test_a_kill_between_steps_leaves_an_output_and_a_rerun_cleans_up(tmp_path, monkeypatch, crash_at):
    out = tmp_path / "o"
    _write(out, "old")
    real_replace, real_rmtree = os.replace, shutil.rmtree
    renames = []
    failing = {"aside": {1}, "swap": {2}, "swap-kill": {2, 3}, "delete": set()}[crash_at]

    def replace(src, dst):
        renames.append((src, dst))
        if len(renames) in failing:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    def rmtree(path, *args, **kwargs):
        if crash_at == "delete":
            raise KeyboardInterrupt("killed")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(_common.os, "replace", replace)
    monkeypatch.setattr(_common.shutil, "rmtree", rmtree)
    staging = new_output(out, "test", {})
    (staging / "result.txt").write_text("new")
    with pytest.raises(KeyboardInterrupt):
        replace_output(staging, out)
    monkeypatch.undo()
    right_after, recovered = CRASHES[crash_at]
    if right_after is None:
        assert not out.exists()
        # both outputs are complete on disk beside it
        complete = {(p / "result.txt").read_text() for p in tmp_path.iterdir() if (p / OUTPUT_MARKER).is_file()}
        assert complete == {"old", "new"}
    else:
        assert (out / "result.txt").read_text() == right_after
    # the next run first recovers: the output path holds the newest complete output, nothing else is left
    check_output_target(out)
    assert (out / "result.txt").read_text() == recovered
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    _write(out, "third")
    assert (out / "result.txt").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_an_unfinished_staging_directory_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "o"
    _write(out, "old")
    staging = new_output(out, "test", {})      # killed while writing: no marker yet
    (staging / "half.txt").write_text("half")
    check_output_target(out)
    assert not staging.exists()
    assert (out / "result.txt").read_text() == "old"


def test_leftovers_of_another_output_are_not_touched(tmp_path):
    _write(tmp_path / "a", "a")
    other = tmp_path / ".b.sparkopt-new-0123456789ab"
    other.mkdir()
    # named like a leftover of `a` but holds no marker: not ours, left alone
    look_alike = tmp_path / ".a.sparkopt-old-0123456789ab"
    (look_alike / "notes").mkdir(parents=True)
    check_output_target(tmp_path / "a")
    assert other.exists() and (look_alike / "notes").exists()
