"""Score a dataset with a model saved by jobs/train.py (or any sparkopt.ml Model.save) and write
Parquet with the model's output columns.

    python jobs/predict.py --model out/a9a/model --input data/a9a.t --output out/a9a-scores
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from _common import (JobError, add_dataset_arguments, check_output_target, dataset_options, new_output, read_dataset,
                     replace_output, report_failure, add_spark_arguments, job_session)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="directory of a saved sparkopt model (train.py's DIR/model)")
    p.add_argument("--input", required=True, help="data to score: LIBSVM, Parquet or CSV")
    add_dataset_arguments(p, label_help="label column kept in the output when present")
    p.add_argument("--output", required=True,
                   help="Parquet output directory (an existing one is replaced only when it is a sparkopt output)")
    add_spark_arguments(p, "local[*]")
    return p.parse_args(argv)


def model_class(model_dir: Path):
    """The sparkopt model class the saved model names (looked up among sparkopt's, never imported)."""
    from sparkopt.ml.persistence import MODEL_CLASSES, saved_model_class

    parts = sorted((model_dir / "metadata").glob("part-*"))
    if not parts:
        raise JobError(f"{model_dir} is not a saved model (no metadata/)")
    try:
        name = json.loads(parts[0].read_text()).get("class")
    except (OSError, ValueError, AttributeError):
        raise JobError(f"{parts[0]} is not a saved model's metadata (not a JSON object)") from None
    cls = saved_model_class(name)
    if cls is None:
        raise JobError(f"{model_dir} holds a {name!r}, not a sparkopt model (one of {sorted(MODEL_CLASSES)})")
    return cls


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(os.path.abspath(args.output))
    try:
        model_dir = Path(args.model)
        if not model_dir.is_dir():
            raise JobError(f"model not found: {model_dir}")
        if not os.path.exists(args.input):
            raise JobError(f"input not found: {args.input}")
        cls = model_class(model_dir)
        check_output_target(output)
        with job_session("sparkopt-predict", args.master, "local[*]", args.confs, remote=args.remote) as spark:
            score(spark, cls, model_dir, args, output)
    except Exception as err:   # one line, never a partial output
        return report_failure("predict.py", err)
    print(f"wrote {output}")
    return 0


def score(spark, cls, model_dir: Path, args, output: Path) -> None:
    """Score ``args.input`` with the saved model into ``output`` (staged, then swapped in)."""
    staging = None
    try:
        model = cls.load(str(model_dir))
        binary = model._state["loss"] in ("logistic", "hinge", "squared_hinge")
        df, features, _ = read_dataset(spark, args.input, **dataset_options(args), num_features=model.numFeatures,
                                       binary_labels=binary)
        model.setFeaturesCol(features)
        staging = new_output(output, "predict.py", {"input": args.input, "model": str(model_dir)})
        # append: the staging directory already holds the (pending) marker, which Spark's readers skip
        model.transform(df).write.mode("append").parquet(str(staging))
        replace_output(staging, output)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
