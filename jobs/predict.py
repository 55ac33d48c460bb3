"""Score a dataset with a model saved by jobs/train.py (or any sparkopt.ml Model.save) and write
Parquet with the model's output columns.

    python jobs/predict.py --model out/a9a/model --input data/a9a.t --output out/a9a-scores
"""
from __future__ import annotations

import argparse
import json
import sys

from _common import (JobError, add_dataset_arguments, add_spark_arguments, dataset_options, job_session, read_dataset,
                     report_failure)
from _progress import JobProgress
from _files import Paths, discard, new_output, prepare_output, replace_output, require_input


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="directory of a saved sparkopt model (train.py's DIR/model)")
    p.add_argument("--input", required=True, help="data to score: LIBSVM, Parquet or CSV")
    add_dataset_arguments(p, label_help="label column kept in the output when present")
    p.add_argument("--output", required=True,
                   help="Parquet output directory (an existing one is replaced only when it is a sparkopt output)")
    add_spark_arguments(p, "local[*]")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p.parse_args(argv)


def model_class(model_dir, store=None):
    """The sparkopt model class the saved model at ``model_dir`` (on ``store``, default the local
    disk) names, looked up among sparkopt's, never imported."""
    from _files import LocalStore

    store = store or LocalStore()
    model_dir = store.resolve(model_dir)
    metadata = store.child(model_dir, "metadata")
    parts = sorted(n for n in store.names(metadata) if n.startswith("part-"))
    if not parts:
        raise JobError(f"{model_dir} is not a saved model (no metadata/)")
    part = store.child(metadata, parts[0])
    try:
        name = json.loads(store.read(part, 2**26)).get("class")
    except (OSError, ValueError, AttributeError, TypeError):
        raise JobError(f"{part} is not a saved model's metadata (not a JSON object)") from None
    return model_class_named(name, model_dir)


def check_paths(paths: Paths, args):
    """The model directory and the input present, the output replaceable and its parent created,
    as far as ``paths`` can tell (see train.check_paths); the model's class when its store is known."""
    store = paths.store(args.model, "--model")
    require_input(store, args.model, "model", kind="dir")
    require_input(paths.store(args.input, "--input"), args.input, "input")
    out_store = paths.store(args.output, "--output", output=True)
    if out_store is not None:
        prepare_output(args.output, out_store)
    return model_class(args.model, store) if store is not None else None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_paths(Paths(confs=args.confs), args)     # before Spark starts where the file systems are known
        with job_session("sparkopt-predict", args.master, "local[*]", args.confs, remote=args.remote) as spark:
            paths = Paths(spark)
            cls = check_paths(paths, args)
            if cls is None:        # a model on a file system only the Connect server sees: its own reader says
                from sparkopt.ml.persistence import _load_metadata

                name = _load_metadata(args.model, spark)[0].get("class")
                cls = model_class_named(name, args.model)
            target, rows = score(spark, cls, paths, args)
    except Exception as err:   # one line, never a partial output
        return report_failure("predict.py", err)
    print(f"wrote {rows} rows to {target}")
    return 0


def model_class_named(name, model_dir):
    """The registered sparkopt model class of the full class name ``name`` (JobError otherwise)."""
    from sparkopt.ml.persistence import MODEL_CLASSES, saved_model_class

    cls = saved_model_class(name)
    if cls is None:
        raise JobError(f"{model_dir} holds a {name!r}, not a sparkopt model (one of {sorted(MODEL_CLASSES)})")
    return cls


def score(spark, cls, paths: Paths, args):
    """Score ``args.input`` with the saved model into ``args.output`` (staged, read back, then
    swapped in); (the output's path, the rows written)."""
    store = paths.store(args.output, "--output", output=True)
    model_store = paths.store(args.model, "--model")
    model_path = model_store.spark_path(model_store.resolve(args.model)) if model_store is not None else args.model
    progress = JobProgress("predict.py", spark, enabled=not args.quiet)
    staging = None
    try:
        with progress.phase("read"):
            model = cls.load(model_path)
            binary = model._state["loss"] in ("logistic", "hinge", "squared_hinge")
            df, features, _ = read_dataset(spark, args.input, **dataset_options(args), num_features=model.numFeatures,
                                           binary_labels=binary, store=paths.store(args.input, "--input"))
        model.setFeaturesCol(features)
        staging = new_output(args.output, "predict.py", {"input": args.input, "model": args.model}, store)
        with progress.phase("score"):
            scored = model.transform(df)
            # append: the staging directory already holds the (pending) marker, which Spark's readers skip
            scored.write.mode("append").parquet(store.spark_path(staging))
        back = spark.read.parquet(store.spark_path(staging))      # read back from the output's file system
        if back.columns != scored.columns:
            raise JobError(f"the scores read back from {staging} have columns {back.columns}, not {scored.columns}")
        rows = back.count()
        target = replace_output(staging, args.output, store, {"rows": rows})
        staging = None
        return store.spark_path(target), rows
    finally:
        discard(staging, store)


if __name__ == "__main__":
    sys.exit(main())
