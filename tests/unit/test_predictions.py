"""What a model's transform ships into the executors: sparkopt.predictions.LinearPredictor inside
sparkopt.ml.scoring.arrow_scorer. It must compute the model's outputs from an Arrow batch of
Spark ML vectors, and unpickle in a fresh Python without importing pyspark.ml, the estimators
or the solvers (each new Python worker paid ~2 s for those when the whole model was shipped;
pandas it may still import: pyarrow's pa.array loads it when installed).
Equality with MLlib's transform is tested in tests/spark (test_ml_api, test_ml_vs_mllib, test_glr)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from scipy.special import expit, softmax

from sparkopt.ml.scoring import arrow_scorer
from sparkopt.objectives.losses import glm_loss
from sparkopt.predictions import LinearPredictor



VECTOR = pa.struct([pa.field("type", pa.int8(), False), pa.field("size", pa.int32()),
                    pa.field("indices", pa.list_(pa.field("element", pa.int32(), False))),
                    pa.field("values", pa.list_(pa.field("element", pa.float64(), False)))])


def vectors(X: np.ndarray) -> pa.StructArray:
    """Rows of X as Spark ML vectors in Arrow (VectorUDT's struct): even rows dense, odd rows sparse."""
    rows = []
    for i, x in enumerate(X):
        if i % 2:
            nz = np.flatnonzero(x)
            rows.append({"type": 0, "size": len(x), "indices": nz.tolist(), "values": x[nz].tolist()})
        else:
            rows.append({"type": 1, "size": None, "indices": None, "values": x.tolist()})
    return pa.array(rows, type=VECTOR)


@pytest.fixture
def X():
    rng = np.random.default_rng(5)
    return rng.normal(size=(7, 4)) * (rng.random((7, 4)) < 0.6)


def test_each_kind_gives_the_models_formulas(X):
    rng = np.random.default_rng(6)
    b, c = rng.normal(size=(1, 4)), np.array([0.3])
    m = X @ b[0] + c[0]
    logistic = LinearPredictor("logistic", b, c, raw="raw", probability="prob", threshold=0.4)(X)
    np.testing.assert_array_equal(logistic["raw"], np.column_stack([-m, m]))
    np.testing.assert_array_equal(logistic["prob"][:, 1], expit(m))
    np.testing.assert_array_equal(logistic["prediction"], (expit(m) > 0.4).astype(float))
    svm = LinearPredictor("margin_classifier", b, c, raw="raw", threshold=0.1)(X)
    assert set(svm) == {"raw", "prediction"}
    np.testing.assert_array_equal(svm["prediction"], (m > 0.1).astype(float))

    B, C = rng.normal(size=(3, 4)), rng.normal(size=3)
    M = X @ B.T + C
    multi = LinearPredictor("multinomial", B, C, probability="p")(X)
    assert set(multi) == {"p", "prediction"}                  # rawPrediction's name left empty: not produced
    np.testing.assert_allclose(multi["p"], softmax(M, axis=1), rtol=1e-15)
    np.testing.assert_array_equal(multi["prediction"], np.argmax(M, axis=1))
    # MLlib's thresholds: argmax p_k / t_k, a zero threshold wins outright
    t = (0.5, 0.0, 2.0)
    np.testing.assert_array_equal(LinearPredictor("multinomial", B, C, thresholds=t)(X)["prediction"], np.ones(len(X)))

    offset = np.linspace(-1, 1, len(X))
    assert LinearPredictor("identity", b, c)(X)["prediction"] == pytest.approx(m, rel=1e-15)
    np.testing.assert_array_equal(LinearPredictor("exp", b, c)(X, offset)["prediction"], np.exp(m + offset))
    big = LinearPredictor("exp", b * 1e6, c)(X)["prediction"]
    assert np.all(np.isfinite(big))                           # the margin is capped at 709: no overflow
    gamma = glm_loss("gamma", "log")
    out = LinearPredictor("glm", b, c, link="eta", glm=gamma)(X, offset)
    np.testing.assert_array_equal(out["eta"], m + offset)
    np.testing.assert_array_equal(out["prediction"], gamma.mean(m + offset))


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="'probit'"):
        LinearPredictor("probit", np.zeros((1, 2)), np.zeros(1))


def test_the_arrow_scorer_reads_dense_and_sparse_vectors(X):
    B, C = np.arange(12.0).reshape(3, 4) / 10, np.array([0.1, -0.2, 0.3])
    predictor = LinearPredictor("multinomial", B, C, raw="raw", probability="prob")
    outputs = [("raw", "vector"), ("prob", "vector"), ("prediction", "double")]
    got = arrow_scorer("features", 4, outputs, predictor)(vectors(X))
    expected = predictor(X)
    for i, (name, _) in enumerate(outputs):
        np.testing.assert_allclose(np.array(got.field(f"_{i}").to_pylist(), dtype=float), expected[name], rtol=1e-15)
    with pytest.raises(ValueError, match="features column 'features' has vectors of size 4, the model expects 5"):
        arrow_scorer("features", 5, outputs, predictor)(vectors(X))


def test_what_transform_ships_unpickles_without_pyspark_ml_or_the_estimators(X, tmp_path):
    from pyspark import cloudpickle

    predictor = LinearPredictor("logistic", np.ones((1, 4)), np.zeros(1), raw="raw", probability="prob")
    scorer = arrow_scorer("features", 4, [("prob", "vector"), ("prediction", "double")], predictor)
    (tmp_path / "scorer.pkl").write_bytes(cloudpickle.dumps(scorer))
    with pa.ipc.new_file(str(tmp_path / "batch.arrow"), pa.schema([("features", VECTOR)])) as sink:
        sink.write_batch(pa.record_batch([vectors(X)], names=["features"]))
    script = f"""
import json, pickle, sys
import pyarrow as pa
scorer = pickle.loads(open({str(tmp_path / 'scorer.pkl')!r}, 'rb').read())
batch = pa.ipc.open_file({str(tmp_path / 'batch.arrow')!r}).read_all().column('features')
out = scorer(batch)
heavy = sorted(m for m in sys.modules if m.startswith(('pyspark.ml', 'sparkopt.ml', 'sparkopt.solvers', 'sparkopt.fit')))
print(json.dumps({{'heavy': heavy, 'prediction': out.field('_1').to_pylist()}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["heavy"] == []
    np.testing.assert_array_equal(result["prediction"], predictor(X)["prediction"])
