"""The summaries' numpy side (sparkopt.ml.summary.label_metrics, curve_points) against
scikit-learn's metrics on real predictions, weighted. (The Spark side is compared with MLlib's
summaries in tests/spark/test_ml_vs_mllib.py.)"""

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score, roc_curve

from sparkopt.ml.summary import curve_points, label_metrics

from conftest import dataset


@pytest.fixture(scope="module")
def letter():
    X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
    X, y = X.toarray()[:3000], y[:3000] - 1
    weights = 0.5 + (np.arange(len(y)) % 5) * 0.25
    model = SkLogistic(C=1.0, max_iter=300).fit(X, y)
    return X, y, weights, model


def _confusion(y, prediction, w):
    labels, predicted = np.unique(y), np.unique(prediction)
    counts = np.zeros((len(labels), len(predicted)))
    np.add.at(counts, (np.searchsorted(labels, y), np.searchsorted(predicted, prediction)), w)
    return labels, predicted, counts


def test_label_metrics_equal_sklearns(letter):
    X, y, w, model = letter
    prediction = model.predict(X)
    m = label_metrics(*_confusion(y, prediction, w))
    precision, recall, f1, support = precision_recall_fscore_support(y, prediction, sample_weight=w,
                                                                     zero_division=0)
    np.testing.assert_allclose(m["precision"], precision, rtol=1e-12)
    np.testing.assert_allclose(m["recall"], recall, rtol=1e-12)
    np.testing.assert_allclose(m["count"], support, rtol=1e-12)
    assert m["tp"].sum() / m["total"] == pytest.approx(accuracy_score(y, prediction, sample_weight=w), rel=1e-12)
    negatives = m["total"] - m["count"]
    false_positives = np.array([w[(prediction == k) & (y != k)].sum() for k in np.unique(y)])
    np.testing.assert_allclose(m["fpr"], false_positives / negatives, rtol=1e-12)


def test_a_label_never_predicted_has_precision_zero():
    labels, predicted = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0])
    counts = np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 1.0]])
    m = label_metrics(labels, predicted, counts)
    np.testing.assert_allclose(m["precision"], [3 / 4, 2 / 4, 0.0])
    np.testing.assert_allclose(m["recall"], [3 / 4, 1.0, 0.0])


def test_curve_points_equal_sklearns_roc(letter):
    X, y, w, model = letter
    binary = (y < 13).astype(float)
    score = SkLogistic(max_iter=300).fit(X, binary).predict_proba(X)[:, 1]
    distinct, index = np.unique(-score, return_inverse=True)          # decreasing scores
    pos = np.bincount(index, weights=w * binary)
    neg = np.bincount(index, weights=w * (1 - binary))
    c = curve_points(-distinct, pos, neg, bins=10 ** 9)               # unbinned
    fpr, tpr, thresholds = roc_curve(binary, score, sample_weight=w, drop_intermediate=False)
    np.testing.assert_allclose(c["fpr"], fpr[1:], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c["recall"], tpr[1:], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c["threshold"], thresholds[1:], rtol=0)
    x, yy = np.r_[0.0, c["fpr"], 1.0], np.r_[0.0, c["recall"], 1.0]
    auc = np.sum(np.diff(x) * (yy[1:] + yy[:-1]) / 2)
    assert auc == pytest.approx(roc_auc_score(binary, score, sample_weight=w), rel=1e-12)
    tp = np.cumsum(pos)
    np.testing.assert_allclose(c["precision"], tp / np.cumsum(pos + neg), rtol=1e-12)


def test_curve_points_merge_into_bins_beyond_twice_their_number():
    score = np.linspace(1, 0, 5000)
    pos, neg = np.ones(5000), np.zeros(5000)
    neg[::2] = 1.0
    c = curve_points(score, pos, neg, bins=1000)
    assert len(c["threshold"]) == 1000                               # runs of 5000 // 1000 = 5 scores
    np.testing.assert_array_equal(c["threshold"], score[::5])
    assert c["recall"][-1] == 1.0 and c["fpr"][-1] == 1.0
    small = curve_points(score[:1999], pos[:1999], neg[:1999], bins=1000)
    assert len(small["threshold"]) == 1999                           # under 2 * bins: every score kept
