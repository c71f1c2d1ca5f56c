"""hpcml against scikit-learn on a matrix of data sets, estimators, splitters, metrics and rank counts.

Two halves, each batched into few ``mpiexec`` launches to stay fast:

* the Python API (``hpcml.GridSearchCV``/``RandomizedSearchCV``/``cross_validate``): one
  script holding many cases, launched once per rank count; every rank compares its own
  results with scikit-learn's (run on that rank) and rank 0 reports one line per case;
* the CLI (``python -m hpcml.cv``): one launch per config, compared on the host.
"""

from __future__ import annotations

import json
import textwrap
import warnings

import numpy as np
import pytest
from compare import assert_cv_results_equal
from helpers import ROOT, run_mpi
from sklearn import datasets as D
from sklearn import model_selection as skms

# --------------------------------------------------------------------------------------
# Python API: one script, many cases, one launch per rank count
# --------------------------------------------------------------------------------------

API_SCRIPT = r"""
import json, os, sys, traceback, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
import numpy as np
from mpi4py import MPI
from sklearn import datasets as D
from sklearn import model_selection as skms
from compare import assert_cv_results_equal
import hpcml

COMM = MPI.COMM_WORLD
CASES = {}


def case(f):
    CASES[f.__name__] = f
    return f


def compare(cls_h, cls_s, make, space, X, y, fit_kw=None, **kw):
    fit_kw = fit_kw or {}
    a = cls_h(make(), space, **kw).fit(X, y, **fit_kw)
    b = cls_s(make(), space, **kw).fit(X, y, **fit_kw)
    assert_cv_results_equal(a.cv_results_, b.cv_results_, atol=1e-10)
    if os.environ.get("HPCML_FOLD_COPIES") == "node" and COMM.Get_size() > 1:
        dense = type(X) is np.ndarray and X.flags.c_contiguous
        folds = hpcml.run_info(a).folds
        assert folds["copies"] == ("node" if dense else "rank"), folds
        assert folds["phases"] == (a.n_splits_ if dense else 0), folds
    for attr in ("best_index_", "best_params_", "best_score_", "multimetric_", "n_splits_"):
        assert hasattr(a, attr) == hasattr(b, attr), attr
        if hasattr(b, attr):
            va, vb = getattr(a, attr), getattr(b, attr)
            if isinstance(vb, float):
                assert abs(va - vb) <= 1e-10 or (np.isnan(va) and np.isnan(vb)), (attr, va, vb)
            else:
                assert va == vb, (attr, va, vb)
    # every rank holds the same table
    key = "mean_test_" + ("score" if "mean_test_score" in a.cv_results_ else b.refit)
    got = COMM.allgather(np.asarray(a.cv_results_[key], dtype=float).tolist())
    assert all(np.allclose(g, got[0], equal_nan=True, rtol=0, atol=0) for g in got), got


def grid(*a, **k):
    compare(hpcml.GridSearchCV, skms.GridSearchCV, *a, **k)


def randomized(*a, **k):
    compare(hpcml.RandomizedSearchCV, skms.RandomizedSearchCV, *a, **k)


@case
def iris_knn_shuffled_kfold_multimetric_train():
    from sklearn.neighbors import KNeighborsClassifier
    X, y = D.load_iris(return_X_y=True)
    grid(KNeighborsClassifier, {"n_neighbors": [1, 7], "weights": ["uniform", "distance"]}, X, y,
         cv=skms.KFold(4, shuffle=True, random_state=0), scoring=["accuracy", "f1_weighted", "balanced_accuracy"],
         refit="f1_weighted", return_train_score=True)


@case
def wine_gaussiannb_roc_auc_ovr_log_loss():
    from sklearn.naive_bayes import GaussianNB
    X, y = D.load_wine(return_X_y=True)
    grid(GaussianNB, {"var_smoothing": [1e-9, 1e-2]}, X, y, cv=skms.StratifiedKFold(3),
         scoring=["roc_auc_ovr", "neg_log_loss"], refit="neg_log_loss")


@case
def string_class_labels_svc():
    from sklearn.svm import SVC
    X, y = D.make_classification(120, 5, n_classes=3, n_informative=3, random_state=0)
    y = np.array(["cat", "dog", "emu"])[y]
    grid(SVC, {"C": [0.1, 10]}, X, y, cv=skms.StratifiedShuffleSplit(3, test_size=0.3, random_state=1),
         scoring=["f1_weighted", "accuracy"], refit="accuracy")


@case
def multioutput_ridge_list_of_grids():
    from sklearn.linear_model import Ridge
    X, y = D.make_regression(90, 4, n_targets=3, noise=1.0, random_state=0)
    grid(Ridge, [{"alpha": [0.1, 10.0]}, {"alpha": [1.0], "fit_intercept": [False]}], X, y,
         cv=skms.RepeatedKFold(n_splits=3, n_repeats=2, random_state=0), scoring=["r2", "neg_mean_absolute_error"],
         refit="r2")


@case
def sparse_float32_sgd_random_search():
    import scipy.sparse as sp
    from scipy.stats import loguniform, randint, uniform
    from sklearn.linear_model import SGDClassifier
    X = sp.random(150, 200, density=0.05, format="csr", random_state=0, dtype=np.float32)
    y = np.random.default_rng(0).integers(0, 2, 150)
    randomized(lambda: SGDClassifier(random_state=0, tol=None, max_iter=10),
               {"alpha": loguniform(1e-5, 1e-1), "l1_ratio": uniform(0.1, 0.8), "max_iter": randint(5, 15),
                "penalty": ["l2", "elasticnet"]}, X, y, n_iter=4, random_state=5, cv=3, scoring="roc_auc")


@case
def failing_fits_numeric_error_score_train_scores():
    from sklearn.linear_model import LogisticRegression
    X, y = D.load_iris(return_X_y=True)
    for es in (-1, 0.5):
        grid(lambda: LogisticRegression(max_iter=500), {"penalty": ["l2", "l1"]}, X, y, cv=3, error_score=es,
             return_train_score=True, scoring=["accuracy", "f1_macro"], refit="accuracy")
        grid(lambda: LogisticRegression(max_iter=500), {"penalty": ["l2", "l1"]}, X, y, cv=3, error_score=es)


@case
def pipeline_pca_logreg_groupkfold():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    X, y = D.load_digits(return_X_y=True)
    X, y = X[:240], y[:240]
    grid(lambda: Pipeline([("pca", PCA()), ("lr", LogisticRegression(max_iter=500))]),
         {"pca__n_components": [5, 15], "lr__C": [0.1]}, X, y, fit_kw={"groups": np.arange(240) % 4},
         cv=skms.GroupKFold(4), scoring="accuracy")


@case
def leave_one_out_tiny_and_time_series():
    from sklearn.linear_model import Lasso
    X, y = D.make_regression(12, 3, random_state=0)
    grid(Lasso, {"alpha": [0.1, 1.0]}, X, y, cv=skms.LeaveOneOut(), scoring="neg_mean_absolute_error")
    X, y = D.load_diabetes(return_X_y=True)
    grid(Lasso, {"alpha": [0.1, 1.0]}, X, y, cv=skms.TimeSeriesSplit(3, gap=4), scoring="r2")


@case
def hpcml_sgd_classifier_comm_self():
    from sklearn.preprocessing import StandardScaler
    from hpcml.sgd import SGDClassifier
    X, y = D.load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    grid(lambda: SGDClassifier(random_state=0, comm="self"), {"alpha": [1e-4, 1e-2]}, X, y, cv=3)


@case
def cross_validate_dict_scoring_failing_split():
    from sklearn.linear_model import LogisticRegression
    X, y = D.load_iris(return_X_y=True)
    # the first split trains on one class only: that fit fails
    cv = [(np.arange(0, 50), np.arange(50, 150)), (np.arange(0, 100), np.arange(100, 150)),
          (np.arange(50, 150), np.arange(0, 50))]
    for scoring in ({"acc": "accuracy", "f1": "f1_macro"}, "accuracy", None):
        a = hpcml.cross_validate(LogisticRegression(), X, y, cv=cv, error_score=-2, scoring=scoring,
                                 return_train_score=True)
        b = skms.cross_validate(LogisticRegression(), X, y, cv=cv, error_score=-2, scoring=scoring,
                                return_train_score=True)
        assert set(a) == set(b), (set(a), set(b))
        for key in b:
            if "time" not in key:
                np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12, err_msg=key)


@case
def in_place_transformer_copy_false():
    # Binarizer(copy=False) binarizes the training and test rows it is given in place.
    # scikit-learn gives every fit fresh rows; hpcml must not hand the same (mutated)
    # cached rows to the next candidate of that fold.
    from sklearn.naive_bayes import BernoulliNB
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Binarizer
    X, y = D.load_digits(return_X_y=True)
    X, y = X[:450], y[:450]
    grid(lambda: Pipeline([("bin", Binarizer(copy=False)), ("nb", BernoulliNB())]),
         {"bin__threshold": [8.0, 0.5, 4.0]}, X, y, cv=3, refit=False)


@case
def scaler_copy_false_train_scores():
    # StandardScaler(copy=False) scales the unit's X_train in place in scikit-learn, and the
    # train score then sees (and transforms again) the scaled rows.
    # On a read-only fold the scaler would copy silently, so the scores would differ.
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = D.make_regression(120, 6, noise=5.0, random_state=0)
    grid(lambda: make_pipeline(StandardScaler(copy=False), Ridge()), {"ridge__alpha": [0.1, 10.0]},
         X * 3 + 5, y, cv=3, refit=False, return_train_score=True)
    Xc, yc = D.load_iris(return_X_y=True)
    grid(lambda: make_pipeline(StandardScaler(), LogisticRegression()),
         {"standardscaler__copy": [True, False], "logisticregression__C": [0.1, 1.0]},
         Xc * 2 + 3, yc, cv=3, refit=False, scoring="neg_log_loss", return_train_score=True)


@case
def failing_metric_of_multimetric_warns_once():
    # roc_auc fails on 3 classes; with error_score=nan scikit-learn warns once per unit, on every rank.
    import warnings
    from sklearn.linear_model import LogisticRegression
    X, y = D.load_iris(return_X_y=True)
    counts = []
    for cls in (hpcml.GridSearchCV, skms.GridSearchCV):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cls(LogisticRegression(max_iter=1000), {"C": [0.1, 1.0]}, cv=3, scoring=["accuracy", "roc_auc"],
                refit="accuracy").fit(X, y)
        counts.append(sorted(str(m.message).split(".")[1] for m in w if "Scoring failed" in str(m.message)))
    # A unit's warnings are shown on every rank (hpcml.cv.engine), once per unit, as in scikit-learn's caller.
    assert counts[0] == counts[1], (counts[0], counts[1])
    grid(lambda: LogisticRegression(max_iter=1000), {"C": [0.1, 1.0]}, X, y, cv=3,
         scoring=["accuracy", "roc_auc"], refit="accuracy")


@case
def precomputed_kernel_svc_pairwise_split():
    # Pairwise estimators take X[train][:, train]: never the node-shared row fold.
    from sklearn.svm import SVC
    X, y = D.load_iris(return_X_y=True)
    K = X @ X.T
    grid(lambda: SVC(kernel="precomputed"), {"C": [0.01, 1.0, 100.0]}, K, y,
         cv=skms.StratifiedKFold(3, shuffle=True, random_state=1))


@case
def boolean_mask_splits_ridge():
    # cv given as (train_mask, test_mask) pairs: rows are the True positions.
    from sklearn.linear_model import Ridge
    X, y = D.make_regression(120, 5, noise=1.0, random_state=3)
    mask = np.random.default_rng(0).random(120) < 0.7
    grid(Ridge, {"alpha": [0.1, 10.0]}, X, y, cv=[(mask, ~mask), (~mask, mask)], scoring="r2")


def _double_a_in_place(X):
    X["a"] = X["a"] * 2.0  # edits the DataFrame it is given
    return X


def _square_in_place(X):
    X **= 2  # edits the ndarray it is given (fails on read-only input)
    return X


@case
def in_place_dataframe_and_ndarray_transformers():
    # Transformers that edit their input in place: every unit must see fresh rows, as in
    # scikit-learn (DataFrames: a new object per unit; read-only arrays: rerun on copies).
    import pandas as pd
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    X, y = D.load_diabetes(return_X_y=True)
    df = pd.DataFrame(X[:, :4], columns=list("abcd"))
    grid(lambda: Pipeline([("f", FunctionTransformer(_double_a_in_place)), ("r", Ridge())]),
         {"r__alpha": [0.1, 1.0, 10.0]}, df, y, cv=3, return_train_score=True, refit=False)
    grid(lambda: Pipeline([("f", FunctionTransformer(_square_in_place)), ("r", Ridge())]),
         {"r__alpha": [0.1, 10.0]}, X[:, :4].copy(), y, cv=3, return_train_score=True, refit=False)
    # (refit=False: a refit on the caller's own X edits it in place, in scikit-learn too)


@case
def writes_into_input_kmeans_copy_x_false_unsorted_csr_svc():
    # KMeans(copy_x=False) centres X in place; SVC sorts a CSR matrix's indices in place.
    import scipy.sparse as sp
    from sklearn.cluster import KMeans
    from sklearn.svm import SVC
    X, y = D.load_iris(return_X_y=True)
    grid(lambda: KMeans(n_init=2, random_state=0, copy_x=False), {"n_clusters": [2, 3]}, X.copy(), None,
         cv=3, refit=False)
    Xs = sp.csr_matrix(X)
    for i in range(Xs.shape[0]):
        a, b = Xs.indptr[i], Xs.indptr[i + 1]
        Xs.indices[a:b] = Xs.indices[a:b][::-1].copy()
        Xs.data[a:b] = Xs.data[a:b][::-1].copy()
    Xs.has_sorted_indices = False
    grid(SVC, {"C": [1.0, 10.0]}, Xs, y, cv=3)


from sklearn.base import BaseEstimator, RegressorMixin


class NormalisingRidge(RegressorMixin, BaseEstimator):
    # Ridge that rescales its sample_weight in place

    def __init__(self, alpha=1.0, power=1.0):
        self.alpha, self.power = alpha, power

    def fit(self, X, y, sample_weight=None):
        from sklearn.linear_model import Ridge
        sample_weight **= self.power
        sample_weight /= sample_weight.mean()
        self.r_ = Ridge(alpha=self.alpha).fit(X, y, sample_weight=sample_weight)
        return self

    def predict(self, X):
        return self.r_.predict(X)


@case
def sample_weight_edited_in_place_by_fit():
    X, y = D.load_diabetes(return_X_y=True)
    w = np.random.default_rng(0).random(len(y)) + 0.1
    grid(NormalisingRidge, {"power": [1.0, 3.0], "alpha": [0.01, 0.1]}, X, y, cv=3,
         fit_kw={"sample_weight": w.copy()})

results = {}
for name, f in CASES.items():
    try:
        f()
        status = "PASS"
    except Exception as exc:
        status = "FAIL " + "".join(traceback.format_exception_only(type(exc), exc)).strip()[:1500]
    statuses = COMM.gather(status, root=0)
    if COMM.Get_rank() == 0:
        results[name] = [s for s in statuses if s != "PASS"]
if COMM.Get_rank() == 0:
    print("RESULTS " + json.dumps(results))
"""

API_CASES = [
    "iris_knn_shuffled_kfold_multimetric_train",
    "wine_gaussiannb_roc_auc_ovr_log_loss",
    "string_class_labels_svc",
    "multioutput_ridge_list_of_grids",
    "sparse_float32_sgd_random_search",
    "failing_fits_numeric_error_score_train_scores",
    "pipeline_pca_logreg_groupkfold",
    "leave_one_out_tiny_and_time_series",
    "hpcml_sgd_classifier_comm_self",
    "cross_validate_dict_scoring_failing_split",
    "in_place_transformer_copy_false",
    "scaler_copy_false_train_scores",
    "failing_metric_of_multimetric_warns_once",
    "precomputed_kernel_svc_pairwise_split",
    "boolean_mask_splits_ridge",
    "in_place_dataframe_and_ndarray_transformers",
    "writes_into_input_kmeans_copy_x_false_unsorted_csr_svc",
    "sample_weight_edited_in_place_by_fit",
]
# (ranks, HPCML_FOLD_COPIES): "node" runs every case split by split on one
# node-shared fold buffer (hpcml.cv.folds) instead of per-rank fold copies.
API_RUNS = {"1": (1, None), "3": (3, None), "3-node-folds": (3, "node")}


@pytest.fixture(scope="module")
def api_results(tmp_path_factory):
    script = tmp_path_factory.mktemp("api") / "api_matrix.py"
    script.write_text(API_SCRIPT)
    found = {}
    for label, (n, folds) in API_RUNS.items():
        env = {"HPCML_FOLD_COPIES": folds} if folds else None
        proc = run_mpi(n, [str(script), str(ROOT / "tests")], timeout=300, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
        assert proc.returncode == 0 and line, proc.stderr[-3000:]
        found[label] = json.loads(line[0][len("RESULTS ") :])
    return found


@pytest.mark.parametrize("n", API_RUNS)
@pytest.mark.parametrize("name", API_CASES)
def test_api_equals_sklearn(api_results, n, name):
    assert name in api_results[n], sorted(api_results[n])
    failures = api_results[n][name]
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------
# CLI: python -m hpcml.cv CONFIG.toml, compared on the host
# --------------------------------------------------------------------------------------


def _columns(folder):
    """cv_results.json -> arrays comparable with scikit-learn's cv_results_ (tuples as lists)."""
    raw = json.loads((folder / "cv_results.json").read_text())
    out = {}
    for key, values in raw.items():
        if key in ("params", "model") or key.startswith("param_"):
            out[key] = values
        else:
            out[key] = np.array([np.nan if v is None else v for v in values], dtype=float)
    return out


def _lists(value):
    return list(value) if isinstance(value, tuple) else value


def _sklearn_as_json(results):
    """scikit-learn's cv_results_ with tuple parameter values as lists (what JSON can hold)."""
    out = dict(results)
    out["params"] = [{k: _lists(v) for k, v in p.items()} for p in results["params"]]
    for key, value in results.items():
        if key.startswith("param_"):
            data = np.empty(len(value), dtype=object)
            data[:] = [_lists(v) for v in np.ma.getdata(value)]
            out[key] = np.ma.MaskedArray(data, mask=np.ma.getmaskarray(value))
    return out


def _run_cli(tmp_path, n, name, toml, timeout=180):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(textwrap.dedent(toml))
    out = tmp_path / f"out-{name}"
    proc = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=timeout)
    return proc, out


def _assert_cli_equals(tmp_path, n, name, toml, ref, rtol=0.0):
    proc, out = _run_cli(tmp_path, n, name, toml)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_cv_results_equal(_columns(out), _sklearn_as_json(ref.cv_results_), extra=("model",), atol=1e-10, rtol=rtol)
    best = json.loads((out / "best.json").read_text())
    assert best["best_index"] == ref.best_index_
    assert best["best_params"] == {k: _lists(v) for k, v in ref.best_params_.items()}
    assert best["best_score"] == pytest.approx(ref.best_score_, abs=1e-10)
    assert (out / "best_model.joblib").exists()
    return out


def _fit_quietly(search, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(*args, **kw)


def test_cli_sample_weight_reaches_fit_and_scorers(tmp_path):
    """scikit-learn >= 1.9 passes sample_weight to fit *and* to the scorers that accept it."""
    from sklearn.linear_model import LogisticRegression

    from hpcml.data import write_dataset

    X, y = D.load_breast_cancer(return_X_y=True)
    w = np.random.default_rng(0).random(len(y)) * 3
    write_dataset(tmp_path / "bc.h5", X, y, sample_weight=w)
    ref = _fit_quietly(
        skms.GridSearchCV(
            LogisticRegression(max_iter=5000),
            {"C": [0.01, 1.0]},
            cv=skms.StratifiedKFold(3),
            scoring=["accuracy", "roc_auc"],
            refit="accuracy",
        ),
        X,
        y,
        sample_weight=w,
    )
    _assert_cli_equals(
        tmp_path,
        2,
        "sw",
        """
        [data]
        path = "bc.h5"
        sample_weight = "sample_weight"
        [[model]]
        estimator = "sklearn.linear_model.LogisticRegression"
        params = { max_iter = 5000 }
        grid = { C = [0.01, 1.0] }
        [cv]
        splitter = "StratifiedKFold"
        n_splits = 3
        [scoring]
        metrics = ["accuracy", "roc_auc"]
        """,
        ref,
    )


def test_cli_mlp_tuple_grid_more_ranks_than_units(tmp_path):
    """hidden_layer_sizes as TOML arrays; 5 ranks for 4 candidates x 3 folds (balanced_accuracy, one-element list)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from hpcml.data import write_dataset

    X, y = D.load_iris(return_X_y=True)
    write_dataset(tmp_path / "iris.h5", X, y)
    ref = _fit_quietly(
        skms.GridSearchCV(
            Pipeline([("sc", StandardScaler()), ("mlp", MLPClassifier(max_iter=100, random_state=0))]),
            {"mlp__hidden_layer_sizes": [(5,), (4, 3)], "mlp__alpha": [1e-4, 1e-1]},
            cv=skms.KFold(3, shuffle=True, random_state=0),
            scoring="balanced_accuracy",
        ),
        X,
        y,
    )
    _assert_cli_equals(
        tmp_path,
        5,
        "mlp",
        """
        [data]
        path = "iris.h5"
        [[model]]
        steps = [
          { name = "sc", estimator = "sklearn.preprocessing.StandardScaler" },
          { name = "mlp", estimator = "sklearn.neural_network.MLPClassifier", params = { max_iter = 100 } },
        ]
        params = { mlp__random_state = 0 }
        grid = { mlp__hidden_layer_sizes = [[5], [4, 3]], mlp__alpha = [1e-4, 1e-1] }
        [cv]
        splitter = "KFold"
        n_splits = 3
        shuffle = true
        random_state = 0
        [scoring]
        metrics = ["balanced_accuracy"]
        """,
        ref,
    )


def test_cli_node_shared_folds_equal_sklearn(tmp_path):
    """[run] fold_copies = "node": split-by-split on one node-shared fold, train scores, 6 splits, 3 ranks."""
    from sklearn.svm import SVC

    from hpcml.data import write_dataset

    X, y = D.load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    write_dataset(tmp_path / "digits.h5", X, y)
    cv = skms.RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0)
    ref = _fit_quietly(
        skms.GridSearchCV(SVC(), {"C": [0.5, 5.0], "gamma": [1e-3, 1e-2]}, cv=cv, return_train_score=True), X, y
    )
    out = _assert_cli_equals(
        tmp_path,
        3,
        "nodefolds",
        """
        [data]
        path = "digits.h5"
        [[model]]
        estimator = "sklearn.svm.SVC"
        grid = { C = [0.5, 5.0], gamma = [1e-3, 1e-2] }
        [cv]
        splitter = "RepeatedStratifiedKFold"
        n_splits = 3
        n_repeats = 2
        random_state = 0
        [run]
        return_train_score = true
        fold_copies = "node"
        """,
        ref,
    )
    report = json.loads((out / "run.json").read_text())
    assert report["folds"]["copies"] == "node" and report["folds"]["phases"] == 6, report["folds"]
    assert report["folds"]["fold_bytes"] == 600 * 64 * 8


def test_cli_regression_grid_list_metric_table_error_score_train(tmp_path):
    """A list of grids with failing candidates, a metrics table with custom names, train scores, 1 rank."""
    from sklearn.linear_model import ElasticNet

    from hpcml.data import write_dataset

    X, y = D.make_regression(150, 6, noise=3.0, random_state=1)
    write_dataset(tmp_path / "reg.h5", X, y)
    ref = _fit_quietly(
        skms.GridSearchCV(
            ElasticNet(),
            [{"alpha": [0.1, 1.0]}, {"alpha": [0.5], "l1_ratio": [0.2, 2.0]}],
            cv=skms.RepeatedKFold(n_splits=3, n_repeats=2, random_state=0),
            scoring={"R2": "r2", "MAE": "neg_mean_absolute_error"},
            refit="MAE",
            return_train_score=True,
            error_score=-1e6,
        ),
        X,
        y,
    )
    _assert_cli_equals(
        tmp_path,
        1,
        "reg",
        """
        [data]
        path = "reg.h5"
        [[model]]
        estimator = "sklearn.linear_model.ElasticNet"
        grid = [ { alpha = [0.1, 1.0] }, { alpha = [0.5], l1_ratio = [0.2, 2.0] } ]
        [cv]
        splitter = "RepeatedKFold"
        n_splits = 3
        n_repeats = 2
        random_state = 0
        [scoring]
        metrics = { R2 = "r2", MAE = "neg_mean_absolute_error" }
        refit = "MAE"
        [run]
        return_train_score = true
        error_score = -1000000
        """,
        ref,
    )


def test_cli_groups_pipeline_random_search(tmp_path):
    """LeaveOneGroupOut, a scaled PCA + LogisticRegression pipeline with loguniform/randint, 4 ranks."""
    from scipy.stats import loguniform, randint
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from hpcml.data import write_dataset

    X, y = D.load_wine(return_X_y=True)
    groups = np.arange(len(y)) % 4
    write_dataset(tmp_path / "wine.h5", X, y, groups=groups)
    ref = _fit_quietly(
        skms.RandomizedSearchCV(
            Pipeline([("sc", StandardScaler()), ("pca", PCA()), ("lr", LogisticRegression(max_iter=1000))]),
            {"pca__n_components": randint(2, 8), "lr__C": loguniform(1e-2, 1e2)},
            n_iter=3,
            random_state=4,
            cv=skms.LeaveOneGroupOut(),
            scoring=["roc_auc_ovr", "neg_log_loss", "f1_weighted"],
            refit="neg_log_loss",
        ),
        X,
        y,
        groups=groups,
    )
    _assert_cli_equals(
        tmp_path,
        4,
        "logo",
        """
        [data]
        path = "wine.h5"
        groups = "groups"
        [[model]]
        steps = [
          { name = "sc", estimator = "sklearn.preprocessing.StandardScaler" },
          { name = "pca", estimator = "sklearn.decomposition.PCA" },
          { name = "lr", estimator = "sklearn.linear_model.LogisticRegression", params = { max_iter = 1000 } },
        ]
        n_iter = 3
        [model.distributions]
        pca__n_components = { dist = "randint", low = 2, high = 8 }
        lr__C = { dist = "loguniform", low = 1e-2, high = 1e2 }
        [cv]
        splitter = "LeaveOneGroupOut"
        [scoring]
        metrics = ["roc_auc_ovr", "neg_log_loss", "f1_weighted"]
        refit = "neg_log_loss"
        [run]
        random_state = 4
        """,
        ref,
    )


def test_cli_hpcml_sgd_default_comm_does_not_hang(tmp_path):
    """hpcml.sgd.SGDClassifier with its default comm (COMM_WORLD) as a [[model]].

    Every rank fits a different unit, so a COMM_WORLD collective inside ``fit``
    must not be used: the search has to finish (as with ``comm = "self"``) or stop
    with one ``hpcml: error:`` line; it must never hang.
    """
    from hpcml.data import write_dataset
    from hpcml.sgd import SGDClassifier

    X, y = D.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    write_dataset(tmp_path / "bc.h5", X, y)
    proc, out = _run_cli(
        tmp_path,
        2,
        "sgd",
        """
        [data]
        path = "bc.h5"
        [[model]]
        estimator = "hpcml.sgd.SGDClassifier"
        params = { random_state = 0 }
        grid = { alpha = [1e-4, 1e-2] }
        [cv]
        n_splits = 3
        """,
        timeout=40,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.returncode == 2:
        assert len(lines) == 1 and lines[0].startswith("hpcml: error: ") and "comm" in lines[0], proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = skms.GridSearchCV(SGDClassifier(random_state=0, comm="self"), {"alpha": [1e-4, 1e-2]}, cv=3).fit(X, y)
    assert_cv_results_equal(_columns(out), _sklearn_as_json(ref.cv_results_), extra=("model",), atol=1e-10)


# --------------------------------------------------------------------------------------
# data files that the CLI cannot use: refused early, leaving nothing behind
# --------------------------------------------------------------------------------------


def test_write_dataset_rejects_string_labels_without_leaving_a_file(tmp_path):
    from hpcml.data import write_dataset
    from hpcml.errors import DataError

    X, y = D.load_iris(return_X_y=True)
    path = tmp_path / "str.h5"
    with pytest.raises(DataError, match="y is not numeric"):
        write_dataset(path, X, np.array(["a", "b", "c"])[y])
    # a half-written file (X without y) would later be reported as "dataset 'y' not found"
    assert not path.exists()


def test_multioutput_y_is_refused_by_write_dataset_as_by_the_loader(tmp_path):
    from hpcml.data import H5Dataset, write_dataset
    from hpcml.errors import DataError

    X, y = D.make_regression(20, 3, n_targets=2, random_state=0)
    path = tmp_path / "multi.h5"
    with pytest.raises(DataError, match="1-D"):
        write_dataset(path, X, y)
        H5Dataset(path).validate()  # reached only if write_dataset accepted it: the loader refuses it
    assert not path.exists()
