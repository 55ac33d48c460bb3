"""docker-compose.yml stays valid and runs the same Spark version as the pyspark dependency."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyspark
import pytest

from skipgate import skip_unless_installable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose_config():
    if os.environ.get("CI") and shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (tests/run.sh installs Debian's package when run as root)")
    exe = skip_unless_installable("docker-compose", "apt-get install docker-compose "
                                  "(tests/run.sh does it when run as root)")
    proc = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_compose_validates_with_master_two_workers_and_submit(compose_config):
    services = re.findall(r"^  ([\w-]+):$", compose_config.split("\nservices:\n", 1)[-1].split("\nversion:")[0], re.M)
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "submit"} <= set(services)
    assert "org.apache.spark.deploy.master.Master" in compose_config
    assert compose_config.count("org.apache.spark.deploy.worker.Worker") == 2
    assert "spark://spark-master:7077" in compose_config and "jobs/train.py" in compose_config


def test_compose_image_matches_pyspark_version(compose_config):
    images = set(re.findall(r"image: (\S+)", compose_config))
    assert images == {f"apache/spark:{pyspark.__version__}-python3"}
