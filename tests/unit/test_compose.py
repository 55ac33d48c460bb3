"""docker-compose.yml stays valid and runs one image, built from docker/Dockerfile on the Apache
Spark image of the same version as the pyspark dependency, with sparkopt's pinned dependencies
installed at build time. No Docker engine here: what can be checked without building is checked
(the base image, the requirements against pyproject.toml, the build context against what the
Dockerfile copies)."""
import fnmatch
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pyspark
import pytest

from skipgate import skip_unless_installable

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


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


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _requirements(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def _services(config: str) -> dict[str, str]:
    """Each service's block of `docker-compose config` output."""
    body = config.split("\nservices:\n", 1)[-1]
    blocks = re.split(r"^  ([\w-]+):$", body, flags=re.M)
    return {name: block for name, block in zip(blocks[1::2], blocks[2::2])}


def test_compose_validates_with_master_two_workers_and_submit(compose_config):
    services = _services(compose_config)
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "submit"} <= set(services)
    assert "org.apache.spark.deploy.master.Master" in compose_config
    assert compose_config.count("org.apache.spark.deploy.worker.Worker") == 2
    assert "spark://spark-master:7077" in compose_config and "jobs/train.py" in compose_config


def test_every_service_runs_the_one_image_built_from_the_dockerfile(compose_config):
    services = _services(compose_config)
    images = {re.search(r"^    image: (\S+)$", block, re.M).group(1) for block in services.values()}
    assert len(images) == 1
    for name, block in services.items():
        assert re.search(r"^      dockerfile: docker/Dockerfile$", block, re.M), name
        assert re.search(rf"^      context: {re.escape(str(ROOT))}$", block, re.M), name
        assert "pip install" not in block, f"{name} installs packages at start"
        # the executors read data/ and write out/ at the same paths as the driver
        assert "/opt/sparkopt/data:ro" in block and "/opt/sparkopt/out:rw" in block, name


def test_dockerfile_base_is_the_spark_image_of_the_pyspark_pin():
    froms = [args for word, args in _instructions(DOCKERFILE) if word == "FROM"]
    assert froms == [f"apache/spark:{pyspark.__version__}-python3"]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"pyspark=={pyspark.__version__}" in pins


def test_the_image_installs_pyprojects_pins_but_pyspark():
    """docker/requirements.txt: pyproject.toml's dependencies, pyspark excepted (the image has it),
    and the plot extra; the Dockerfile installs it, then sparkopt without dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [d for d in project["dependencies"] if not d.startswith("pyspark")] + project["optional-dependencies"]["plot"]
    assert _requirements(ROOT / "docker" / "requirements.txt") == wanted
    runs = [args for word, args in _instructions(DOCKERFILE) if word == "RUN"]
    assert any("pip install" in r and "-r /tmp/sparkopt-requirements.txt" in r for r in runs)
    assert any("pip install" in r and "--no-deps /opt/sparkopt" in r for r in runs)


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignored = _requirements(ROOT / ".dockerignore")

    def excluded(rel: str) -> bool:
        parts = Path(rel).parts
        return any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(parts[0], pat) for pat in ignored)

    copies = [args.split()[:-1] for word, args in _instructions(DOCKERFILE) if word == "COPY"]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not excluded(source), f"{source} is excluded from the build context by .dockerignore"
    # and what must stay out of the context does
    for heavy in (".venv", ".git", "data", "out"):
        assert excluded(heavy), heavy
