"""Cross-validation of a path (sparkopt.tuning.cv): each fold's fit equals the fit of its rows
materialized on their own, the held-out metrics equal numpy's, the choice equals the exhaustive
grid's."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_svmlight_file

from sparkopt.blocks import Block
from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.tuning import cross_validate, regularization_path
from sparkopt.tuning.cv import fold_ids

from conftest import dataset


@pytest.fixture(scope="module")
def magic():
    df = pd.read_csv(dataset("magic04.data"), header=None)
    df = df.iloc[np.random.default_rng(1).choice(len(df), 1500, replace=False)]
    return df.iloc[:, :10].to_numpy(float), (df.iloc[:, 10] == "g").to_numpy(float)


@pytest.fixture(scope="module")
def abalone():
    X, y = load_svmlight_file(str(dataset("angel_abalone_8d_train.libsvm")), n_features=8)
    return X.toarray(), y


def _materialized_folds(engine, n_folds, seed):
    """Each row's fold id as cross_validate assigns it, from the engine's own blocks."""
    X, y, w, ids = [], [], [], []
    for p, blocks in enumerate(engine.collect_blocks()):
        for j, block in enumerate(blocks):
            X.append(block.X), y.append(block.y), w.append(block.w)
            ids.append(fold_ids(seed, n_folds, (p, j), block.n_rows))
    return np.vstack(X), np.concatenate(y), np.concatenate(w), np.concatenate(ids)


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("loss, metric", [("logistic", "logLoss"), ("logistic", "accuracy")])
def test_folds_equal_separate_fits_and_metrics_equal_numpy(magic, loss, metric):
    X, y = magic
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(y))
    engine = LocalEngine.from_arrays(X, y, w, num_partitions=3, block_rows=200)
    result = cross_validate(engine, loss, n_folds=4, seed=11, metric_name=metric, elastic_net_param=0.5,
                            n_reg_params=6, tol=1e-10)
    Xa, ya, wa, ids = _materialized_folds(engine, 4, 11)
    assert np.bincount(ids, minlength=4).min() > 0
    for k in range(4):
        train = ids != k
        separate = regularization_path(LocalEngine.from_arrays(Xa[train], ya[train], wa[train], num_partitions=2),
                                       loss, elastic_net_param=0.5, reg_params=result.reg_params, tol=1e-10)
        for a, b in zip(result.paths[k].points, separate.points):
            assert _rel(a.fit.coef_vector, b.fit.coef_vector) < 1e-10
        test = ~train
        for i, point in enumerate(separate.points):
            m = Xa[test] @ point.coefficients + point.intercept
            yt, wt = ya[test], wa[test]
            if metric == "logLoss":
                expected = np.sum(wt * (np.logaddexp(0, m) - yt * m)) / wt.sum()
            else:
                expected = np.sum(wt * ((m > 0) == (yt > 0.5))) / wt.sum()
            assert result.metrics[k, i] == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(result.avg_metrics, result.metrics.mean(axis=0))
    best = np.argmax(result.avg_metrics) if metric == "accuracy" else np.argmin(result.avg_metrics)
    assert result.best_reg_param == result.reg_params[best]
    cold = fit_linear_model(LocalEngine.from_arrays(X, y, w), loss, reg_param=result.best_reg_param,
                            elastic_net_param=0.5, tol=1e-10)
    assert _rel(result.best.coef_vector, cold.coef_vector) < 1e-6


def test_chosen_regparam_equals_the_exhaustive_grids(abalone):
    """Every (fold, regParam) fitted cold on its materialized rows and scored with numpy."""
    X, y = abalone
    engine = LocalEngine.from_arrays(X, y, num_partitions=2)
    regs = [0.5, 0.1, 0.02, 0.004, 0.0]
    for metric in ("rmse", "mae", "r2"):
        result = cross_validate(engine, "squared_error", n_folds=3, seed=5, metric_name=metric,
                                elastic_net_param=1.0, reg_params=regs, tol=1e-10)
        Xa, ya, wa, ids = _materialized_folds(engine, 3, 5)
        table = np.empty((3, len(regs)))
        for k in range(3):
            train = ids != k
            for i, reg in enumerate(sorted(regs, reverse=True)):
                fit = fit_linear_model(LocalEngine.from_arrays(Xa[train], ya[train]), "squared_error", reg_param=reg,
                                       elastic_net_param=1.0, tol=1e-10)
                r = ya[~train] - Xa[~train] @ fit.coefficients - fit.intercept
                table[k, i] = {"rmse": np.sqrt(np.mean(r ** 2)), "mae": np.mean(np.abs(r)),
                               "r2": 1 - np.sum(r ** 2) / np.sum((ya[~train] - ya[~train].mean()) ** 2)}[metric]
        np.testing.assert_allclose(result.metrics, table, rtol=1e-7)
        avg = table.mean(axis=0)
        best = int(np.argmax(avg) if metric == "r2" else np.argmin(avg))
        assert result.best_reg_param == sorted(regs, reverse=True)[best]
        se = table.std(axis=0) / np.sqrt(3)
        sign = -1 if metric == "r2" else 1
        one_se = next(i for i in range(len(regs)) if sign * avg[i] <= sign * avg[best] + se[best])
        assert result.one_std_err_reg_param == sorted(regs, reverse=True)[one_se]


def test_default_grid_comes_from_the_full_datas_lambda_max(magic):
    X, y = magic
    engine = LocalEngine.from_arrays(X, y)
    result = cross_validate(engine, "logistic", n_folds=3, elastic_net_param=1.0, n_reg_params=5)
    full = regularization_path(LocalEngine.from_arrays(X, y), "logistic", elastic_net_param=1.0, n_reg_params=5,
                               early_stop=False)
    np.testing.assert_allclose(result.reg_params, full.reg_params, rtol=1e-12)
    assert result.metrics.shape == (3, 5) and np.all(np.isfinite(result.metrics))


def test_fold_ids_depend_only_on_seed_and_block_position():
    a = fold_ids(3, 5, (1, 2), 1000)
    assert np.array_equal(a, fold_ids(3, 5, (1, 2), 1000)) and set(a) == set(range(5))
    assert not np.array_equal(a, fold_ids(4, 5, (1, 2), 1000))
    assert not np.array_equal(a, fold_ids(3, 5, (2, 1), 1000))
    assert Block(np.zeros((0, 1)), np.zeros(0), np.zeros(0)).take(np.zeros(0, dtype=int)).n_rows == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_folds=1), "numFolds"), (dict(metric_name="auc"), "metricName"),
    (dict(metric_name="rmse"), "does not apply"), (dict(reg_params=[0.1, 0.1]), "distinct"),
])
def test_bad_cv_parameters_are_named(magic, kwargs, match):
    X, y = magic
    with pytest.raises(InputError, match=match):
        cross_validate(LocalEngine.from_arrays(X, y), "logistic", **kwargs)


def test_too_many_folds_for_the_rows_is_named():
    X = np.random.default_rng(0).normal(size=(4, 2))
    with pytest.raises(InputError, match="without rows"):
        cross_validate(LocalEngine.from_arrays(X, np.array([0.0, 1.0, 0.0, 1.0])), "logistic", n_folds=4)


def test_area_under_roc_is_the_weighted_share_of_pairs_ranked_right():
    """Scores one or more bins apart: exactly scikit-learn's weighted AUC; rows sharing a bin
    count one half, as tied scores do there."""
    from sklearn.metrics import roc_auc_score

    from sparkopt.objectives import make_block_objective
    from sparkopt.tuning.cv import ROC_BINS, _heldout_roc, area_under_roc

    rng = np.random.default_rng(0)
    u = (rng.permutation(ROC_BINS)[:400] + 0.5) / ROC_BINS          # one row per bin centre
    margins = np.log(u / (1 - u))
    y = (rng.random(400) < u).astype(float)
    w = rng.uniform(0.5, 2.0, 400)
    bo = make_block_objective("logistic", 1, False)
    block = Block(margins[:, None], y, w)
    got = area_under_roc(_heldout_roc(bo, block, np.array([[1.0], [-1.0]])))
    assert got[0] == pytest.approx(roc_auc_score(y, margins, sample_weight=w), rel=1e-12)
    assert got[1] == pytest.approx(1 - got[0], rel=1e-12)
    tied = area_under_roc(_heldout_roc(bo, block, np.array([[0.0]])))          # every row in one bin
    assert tied[0] == 0.5
    assert np.isnan(area_under_roc(_heldout_roc(bo, Block(margins[:5, None], np.ones(5), w[:5]), np.ones((1, 1))))[0])


def test_cross_validated_area_under_roc_equals_scikit_learns_to_the_bins(magic):
    from sklearn.metrics import roc_auc_score

    X, y = magic
    engine = LocalEngine.from_arrays(X, y, num_partitions=2, block_rows=300)
    result = cross_validate(engine, "logistic", n_folds=3, seed=4, metric_name="areaUnderROC", elastic_net_param=1.0,
                            n_reg_params=5, tol=1e-10)
    Xa, ya, wa, ids = _materialized_folds(engine, 3, 4)
    for k in range(3):
        test = ids == k
        for i, point in enumerate(result.paths[k].points):
            m = Xa[test] @ point.coefficients + point.intercept
            expected = roc_auc_score(ya[test], m) if np.ptp(m) > 0 else 0.5
            assert abs(result.metrics[k, i] - expected) < 2e-3
    assert result.best_reg_param == result.reg_params[int(np.argmax(result.avg_metrics))]
    with pytest.raises(InputError, match="does not apply"):
        cross_validate(engine, "squared_error", metric_name="areaUnderROC")
