"""Pack sparkopt and its runtime dependencies into a virtual environment archive for the executors.

    python jobs/pack_env.py --output sparkopt-env.tar.gz
    spark-submit --master spark://host:7077 --archives sparkopt-env.tar.gz#environment \\
        --conf spark.pyspark.python=./environment/bin/python jobs/train.py ...

As Spark's documentation does it for Python dependencies (Python Package Management, "Using
Virtualenv"): a virtual environment packed with venv-pack, sent with ``--archives`` and unpacked
by every executor into its working directory as ``./environment``, whose ``bin/python`` runs the
executors' Python workers. Steps:

1. ``python -m venv --without-pip DIR`` with ``--python`` (default: this interpreter). venv-pack
   does not copy the interpreter: ``environment/bin/python`` links to it, so it must exist at the
   same path on every executor host (or give ``--python-prefix``, the prefix it has there);
2. sparkopt into it without dependencies (this checkout, or ``--sparkopt`` SPEC: a wheel, a
   directory, a requirement);
3. sparkopt's own dependencies, as its metadata lists them, *except pyspark*: Spark puts its own
   pyspark (``$SPARK_HOME/python/lib/pyspark.zip``) on the executors' path, and pyspark's 300+ MB
   would only make the archive bigger;
4. ``venv-pack`` into OUTPUT, a ``.tar.gz`` / ``.tgz``: the only archives Spark unpacks with the
   system's ``tar`` (symlinks and permissions kept). It unpacks a ``.tar`` in Java, which refuses
   the environment's ``bin/python`` link to the interpreter ("would create entry outside of") and
   drops permissions; its unzip restores no symlinks; other names it copies without unpacking.

Nothing is byte-compiled (``--no-compile``): the archive is smaller and Python compiles what the
workers import. Needs ``venv-pack`` (``pip install 'sparkopt[pack]'``). Exit 0 and one line
(output, size, seconds) on success; 2 with a one-line reason for usage errors, 1 otherwise.
"""
from __future__ import annotations

import argparse
import email.parser
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import JobError, report_failure

ROOT = Path(__file__).resolve().parents[1]
#: what the executors never need from the archive: Spark ships its own pyspark to them
NOT_SHIPPED = ("pyspark",)
FORMATS = {".tar.gz": "tar.gz", ".tgz": "tgz"}
#: archives Spark unpacks, but not into an environment that runs
UNUSABLE = {".tar": "Spark unpacks a .tar in Java, which refuses the link bin/python and drops permissions",
            ".zip": "Spark's unzip restores no symlinks, and bin/python is one"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pack_env.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", required=True, help="the archive to write: .tar.gz or .tgz")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter of the environment (it must exist at the same path on the executors)")
    p.add_argument("--python-prefix", default=None,
                   help="where that interpreter's prefix is on the executors, when not where it is here")
    p.add_argument("--sparkopt", default=str(ROOT), help="what to install as sparkopt: a directory, a wheel, a spec")
    p.add_argument("--compress-level", type=int, default=4, help="gzip level (0-9; 1 packs fastest)")
    p.add_argument("--force", action="store_true", help="replace an existing OUTPUT")
    return p.parse_args(argv)


def archive_format(output: str) -> str:
    for suffix, fmt in FORMATS.items():
        if output.lower().endswith(suffix):
            return fmt
    for suffix, why in UNUSABLE.items():
        if output.lower().endswith(suffix):
            raise JobError(f"--output {output}: name a .tar.gz or .tgz ({why})")
    raise JobError(f"--output {output}: name an archive Spark unpacks (one of {', '.join(FORMATS)})")


def _requires(site_packages: Path, name: str = "sparkopt") -> list[str]:
    """The unconditional Requires-Dist lines of ``name``'s installed metadata (no extras)."""
    found = sorted(site_packages.glob(f"{name}-*.dist-info/METADATA"))
    if not found:
        raise JobError(f"no {name} metadata in {site_packages} after installing it")
    metadata = email.parser.Parser().parsestr(found[0].read_text())
    return [r.strip() for r in metadata.get_all("Requires-Dist") or [] if ";" not in r]


def executor_requirements(requires: list[str]) -> list[str]:
    """``requires`` without what the executors get from Spark (NOT_SHIPPED)."""
    def name(req: str) -> str:
        return re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
    return [r for r in requires if name(r) not in NOT_SHIPPED]


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def pack(output: str, python: str = sys.executable, sparkopt: str = str(ROOT), python_prefix=None,
         compress_level: int = 4, force: bool = False) -> dict:
    """Build the environment in a temporary directory and pack it into ``output``; what was
    packed: output, bytes, seconds, requirements."""
    try:
        import venv_pack
    except ImportError:
        raise JobError("pack_env.py needs venv-pack: pip install 'sparkopt[pack]' (or venv-pack)") from None
    fmt = archive_format(output)
    if os.path.exists(output) and not force:
        raise JobError(f"--output {output} exists (pass --force to replace it)")
    if not 0 <= compress_level <= 9:
        raise JobError(f"--compress-level must be in [0, 9], got {compress_level}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sparkopt-env-") as scratch:
        env = Path(scratch) / "env"
        _run([python, "-m", "venv", "--without-pip", str(env)], f"{python} -m venv")
        env_python = str(env / "bin" / "python")
        pip = [sys.executable, "-m", "pip", "--python", env_python, "install", "--quiet", "--no-compile",
               "--disable-pip-version-check"]
        _run(pip + ["--no-deps", sparkopt], f"installing sparkopt from {sparkopt}")
        site = Path(glob.glob(str(env / "lib" / "python*" / "site-packages"))[0])
        requirements = executor_requirements(_requires(site))
        if requirements:
            _run(pip + requirements, "installing " + " ".join(requirements))
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        venv_pack.pack(prefix=str(env), output=output, format=fmt, python_prefix=python_prefix,
                       compress_level=compress_level, force=force, verbose=False)
    return {"output": os.path.abspath(output), "bytes": os.path.getsize(output),
            "seconds": time.perf_counter() - started, "requirements": requirements}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        packed = pack(args.output, args.python, args.sparkopt, args.python_prefix, args.compress_level, args.force)
    except Exception as err:
        return report_failure("pack_env.py", err)
    print(f"wrote {packed['output']} ({packed['bytes'] / 2**20:.0f} MiB, {packed['seconds']:.0f} s): sparkopt, "
          f"{', '.join(packed['requirements'])}; spark-submit --archives {packed['output']}#environment "
          f"--conf spark.pyspark.python=./environment/bin/python ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
