"""data/ holds the datasets byte for byte as data/SHA256SUMS pins them, and data/README.md
describes every file in it with the rows, features and hash the file really has."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_svmlight_file

from conftest import ROOT, dataset

DATA = ROOT / "data"
DOCUMENTATION = {"README.md", "SHA256SUMS"}          # the two files of data/ that are not datasets


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pinned_hashes() -> dict[str, str]:
    """data/SHA256SUMS as {file name: hash}; the format is sha256sum's (`hash  name`)."""
    pinned = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        match = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line)
        assert match, f"not a sha256sum line: {line!r}"
        pinned[match.group(2)] = match.group(1)
    return pinned


def readme_table() -> dict[str, dict[str, str]]:
    """The files table of data/README.md (header `| file | format | rows | features | sha256 |`)."""
    lines = (DATA / "README.md").read_text().splitlines()
    start = lines.index("| file | format | rows | features | sha256 |")
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        assert row["file"] not in rows, f"{row['file']} is listed twice"
        rows[row["file"]] = row
    return rows


def data_files() -> set[str]:
    return {p.name for p in DATA.iterdir() if p.is_file()} - DOCUMENTATION


PINNED = pinned_hashes()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_pinned_file_is_there_with_its_hash(name):
    path = DATA / name
    assert path.is_file(), f"{name} is listed in data/SHA256SUMS but missing from data/"
    assert sha256_of(path) == PINNED[name], f"{name} differs from the bytes data/SHA256SUMS pins"


def test_every_file_in_data_is_pinned_and_documented():
    files = data_files()
    assert files, "data/ holds no datasets"
    assert files == set(PINNED), (f"not in SHA256SUMS: {sorted(files - set(PINNED))}; "
                                  f"in SHA256SUMS but not in data/: {sorted(set(PINNED) - files)}")
    table = readme_table()
    assert set(table) == files, (f"not in data/README.md's table: {sorted(files - set(table))}; "
                                 f"in the table but not in data/: {sorted(set(table) - files)}")
    readme = (DATA / "README.md").read_text()
    for name in files:
        assert table[name]["sha256"] == PINNED[name], f"data/README.md gives another hash for {name}"
        # the per-file section (source, terms, task, quirks) names the file in bold
        assert re.search(rf"\*\*[^*]*\b{re.escape(name)}\b[^*]*\*\*", readme), f"no section for {name}"


def shape_of(path: Path, fmt: str) -> tuple[int, int]:
    """(rows, features besides the label) as data/README.md counts them."""
    if fmt == "libsvm":
        X, _ = load_svmlight_file(str(path))          # n_features inferred: the largest index
        return X.shape
    if fmt in ("csv", "csv, no header"):
        frame = pd.read_csv(path, header=0 if fmt == "csv" else None)
        return frame.shape[0], frame.shape[1] - 1
    raise AssertionError(f"unknown format {fmt!r} in data/README.md")


@pytest.mark.parametrize("name", sorted(readme_table()))
def test_documented_rows_and_features_are_the_files(name):
    row = readme_table()[name]
    assert shape_of(DATA / name, row["format"]) == (int(row["rows"]), int(row["features"]))


def test_a_missing_dataset_fails_with_how_to_restore_it():
    with pytest.raises(pytest.fail.Exception, match=r"dataset no-such-file is missing: expected .*data/no-such-file"
                                                    r".*git checkout -- data/no-such-file"):
        dataset("no-such-file")
    assert dataset("a9a") == DATA / "a9a"
