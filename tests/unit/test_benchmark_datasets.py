"""jobs/benchmark.py reads its real datasets from the repository's data/ unless --datasets says
otherwise, and every file a case reads is there (no Spark: only the configuration is built)."""
import benchmark       # jobs/ is on pytest's pythonpath (pyproject.toml)
import pytest

from conftest import ROOT


def real_data_files() -> set[str]:
    return {case.source.file for case in benchmark.CASES if hasattr(case.source, "file")}


def test_default_is_the_repository_data_and_every_case_file_is_there():
    cfg = benchmark.Config.from_args(benchmark.parse_args([]))
    assert cfg.datasets == ROOT / "data"
    files = real_data_files()
    assert {"a9a", "w8a", "letter.scale", "kddcup.data_10_percent.gz"} <= files
    for name in sorted(files):
        assert benchmark.dataset_path(name, cfg.datasets).is_file()


def test_datasets_flag_points_the_cases_elsewhere(tmp_path):
    (tmp_path / "a9a").write_bytes((ROOT / "data" / "a9a").read_bytes())
    cfg = benchmark.Config.from_args(benchmark.parse_args(["--datasets", str(tmp_path)]))
    assert benchmark.dataset_path("a9a", cfg.datasets) == tmp_path / "a9a"
    with pytest.raises(FileNotFoundError, match=rf"dataset w8a not found under {tmp_path} \(--datasets DIR\)"):
        benchmark.dataset_path("w8a", cfg.datasets)
