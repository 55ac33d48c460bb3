"""The output protocol's scenarios (jobs/_files.py), to run on any store: tests/unit/test_job_outputs.py
on the local disk (plain paths and file:// URIs), tests/spark/test_job_paths.py on Hadoop file
systems of the JVM (file://, and viewfs://, a file system other than the local one, mounted over a
local directory). Each takes the store, ``where`` (the path to give the protocol for a local path
under the test's directory) and that directory, and inspects the outcome on the local disk."""
import json
import os

import pytest

from _common import JobError
from _files import OUTPUT_MARKER, check_output_target, new_output, replace_output


def foreign(path):
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "data.csv").write_text("1,2\n")
    return path


def snapshot(path):
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


def write(store, output, text, job="test"):
    """One output holding result.txt = text, through the jobs' own steps."""
    staging = new_output(output, job, {"note": text}, store)
    store.write(store.child(staging, "result.txt"), text.encode())
    replace_output(staging, output, store)


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def check_a_foreign_directory_is_refused_and_untouched(store, where, root):
    target = foreign(root / "mine")
    before = snapshot(target)
    with pytest.raises(JobError, match="mine.*not a sparkopt output.*" + OUTPUT_MARKER):
        check_output_target(where(target), store)
    with pytest.raises(JobError, match="not a sparkopt output"):
        write(store, where(target), "new")
    assert snapshot(target) == before
    assert names(root) == ["mine"]      # no staging left beside it


def check_a_file_or_a_symlink_is_refused(store, where, root, links=True):
    (root / "afile").write_text("x")
    with pytest.raises(JobError, match="not a directory"):
        check_output_target(where(root / "afile"), store)
    write(store, where(root / "real"), "ours")
    if links:
        os.symlink(root / "real", root / "link")
        with pytest.raises(JobError, match="symbolic link"):
            check_output_target(where(root / "link"), store)


def check_a_marker_that_is_not_ours_is_refused(store, where, root):
    for i, content in enumerate(["not json", json.dumps({"format": "other"}), json.dumps([1])]):
        target = root / f"o{i}"
        target.mkdir()
        (target / OUTPUT_MARKER).write_text(content)
        with pytest.raises(JobError, match="not a sparkopt output"):
            check_output_target(where(target), store)
    target = root / "dirmarker"
    (target / OUTPUT_MARKER).mkdir(parents=True)
    with pytest.raises(JobError, match="not a sparkopt output"):
        check_output_target(where(target), store)


def check_new_and_empty_targets_are_accepted(store, where, root):
    write(store, where(root / "fresh" / "o"), "one")
    assert (root / "fresh" / "o" / "result.txt").read_text() == "one"
    (root / "empty").mkdir()
    write(store, where(root / "empty"), "two")
    assert (root / "empty" / "result.txt").read_text() == "two"


def check_an_output_carries_the_marker_and_is_replaced(store, where, root):
    out = root / "o"
    write(store, where(out), "old", job="train.py")
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["format"] == "sparkopt-output" and marker["job"] == "train.py" and marker["note"] == "old"
    check_output_target(where(out), store)                     # ours: accepted
    (out / "stale.txt").write_text("from the old run")
    write(store, where(out), "new")
    assert (out / "result.txt").read_text() == "new"
    assert not (out / "stale.txt").exists()      # replaced, not merged
    assert names(root) == ["o"]


# where the swap is interrupted -> what the output path holds right after, and after the next run's recovery
CRASHES = {
    "aside": ("old", "old"),             # moving the old output aside fails: nothing moved
    "swap": ("old", "old"),              # the swap fails: the old output is moved back at once
    "swap-kill": (None, "new"),          # killed after the move aside (no rollback): recovery takes the new one
    "delete": ("new", "new"),            # killed while deleting the old output
}


def check_a_kill_between_steps_leaves_an_output_and_a_rerun_cleans_up(store, where, root, monkeypatch, crash_at):
    out = root / "o"
    write(store, where(out), "old")
    real_rename, real_delete = store.rename, store.delete
    renames = []
    failing = {"aside": {1}, "swap": {2}, "swap-kill": {2, 3}, "delete": set()}[crash_at]

    def rename(src, dst):
        renames.append((src, dst))
        if len(renames) in failing:
            raise KeyboardInterrupt("killed")
        return real_rename(src, dst)

    def delete(path):
        if crash_at == "delete" and store.name(path).startswith(".o.sparkopt-old-"):
            raise KeyboardInterrupt("killed")
        return real_delete(path)

    staging = new_output(where(out), "test", {}, store)
    store.write(store.child(staging, "result.txt"), b"new")
    monkeypatch.setattr(store, "rename", rename)
    monkeypatch.setattr(store, "delete", delete)
    with pytest.raises(KeyboardInterrupt):
        replace_output(staging, where(out), store)
    monkeypatch.setattr(store, "rename", real_rename)
    monkeypatch.setattr(store, "delete", real_delete)
    right_after, recovered = CRASHES[crash_at]
    if right_after is None:
        assert not out.exists()
        # both outputs are complete on disk beside it
        complete = {(p / "result.txt").read_text() for p in root.iterdir() if (p / OUTPUT_MARKER).is_file()}
        assert complete == {"old", "new"}
    else:
        assert (out / "result.txt").read_text() == right_after
    # the next run first recovers: the output path holds the newest complete output, nothing else is left
    check_output_target(where(out), store)
    assert (out / "result.txt").read_text() == recovered
    assert names(root) == ["o"]
    write(store, where(out), "third")
    assert (out / "result.txt").read_text() == "third"
    assert names(root) == ["o"]


def check_an_unfinished_staging_directory_is_removed_by_the_next_run(store, where, root):
    out = root / "o"
    write(store, where(out), "old")
    new_output(where(out), "test", {}, store)      # killed while writing: no marker yet
    staged = [p for p in root.iterdir() if p.name.startswith(".o.sparkopt-new-")]
    assert len(staged) == 1
    (staged[0] / "half.txt").write_text("half")
    check_output_target(where(out), store)
    assert not staged[0].exists()
    assert (out / "result.txt").read_text() == "old"


def check_leftovers_of_another_output_are_not_touched(store, where, root):
    write(store, where(root / "a"), "a")
    other = root / ".b.sparkopt-new-0123456789ab"
    other.mkdir()
    # named like a leftover of `a` but holds no marker: not ours, left alone
    look_alike = root / ".a.sparkopt-old-0123456789ab"
    (look_alike / "notes").mkdir(parents=True)
    check_output_target(where(root / "a"), store)
    assert other.exists() and (look_alike / "notes").exists()


#: every scenario that runs on any store as (store, where, root)
SCENARIOS = [check_a_foreign_directory_is_refused_and_untouched, check_a_marker_that_is_not_ours_is_refused,
             check_new_and_empty_targets_are_accepted, check_an_output_carries_the_marker_and_is_replaced,
             check_an_unfinished_staging_directory_is_removed_by_the_next_run,
             check_leftovers_of_another_output_are_not_touched]
