"""SGDClassifier and SGDRegressor: synchronous data-parallel mini-batch SGD over MPI.

Every rank holds one contiguous shard of the rows.  Each step, each rank
computes the sum of the per-row gradients of its rows of the step's batch,
the ranks sum these with one in-place ``Allreduce`` of a preallocated float64
buffer (:class:`hpcml.sgd.allreduce.GradientExchange`) and every rank applies
the same update, so every rank ends with the same model.

The estimators are ordinary scikit-learn estimators: ``comm=None`` (the default)
means ``MPI.COMM_WORLD`` resolved at fit time, ``comm="self"`` (or
``MPI.COMM_SELF``) trains serially on the calling rank alone, which is what a
candidate fit inside ``hpcml.cv`` or ``sklearn.model_selection.GridSearchCV``
needs.  ``clone`` keeps the communicator by reference.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from hpcml._compat import check_sample_weight, validate_data
from hpcml.comm import agree, mark_agreed, resolve_comm
from hpcml.errors import DataError
from hpcml.sgd import losses as L
from hpcml.sgd.allreduce import GradientExchange
from hpcml.sgd.batches import BatchPlan, LocalGradient
from hpcml.sgd.optimizer import DivergenceWatch, History, Optimizer, StopRule
from hpcml.sgd.sampling import SAMPLING, shard_range, validation_mask
from hpcml.sgd.schedules import SCHEDULES, Schedule


class InvalidData(DataError, ValueError):
    """Unusable training data (a :class:`~hpcml.errors.DataError` that is also a ``ValueError``)."""


def _everywhere(exc: Exception) -> Exception:
    """Mark an error that every rank raises from the same gathered facts: printed once (by rank 0)."""
    exc.agreed = True  # type: ignore[attr-defined]  # read by hpcml.comm.run_guarded
    return exc


def _check_labels(y: Any, where: str) -> None:
    """scikit-learn's classification-target check, as one :class:`InvalidData` line naming the data."""
    try:
        check_classification_targets(y)
    except ValueError as exc:
        first = str(exc).split(". ")[0]
        raise InvalidData(
            f"{where}: {first}; a classifier needs class labels (use a regressor for a continuous target)"
        ) from None


class FitDiverged(InvalidData):
    """The loss or the weights became NaN or infinite (learning rate too large for the data's scale)."""


def resolve_sgd_comm(comm: Any) -> Any:
    """Turn the ``comm`` parameter into a communicator.

    Parameters
    ----------
    comm : None, "world", "self" or mpi4py.MPI.Intracomm
        ``None``/``"world"``: ``MPI.COMM_WORLD``; ``"self"``: ``MPI.COMM_SELF``.

    Returns
    -------
    mpi4py.MPI.Intracomm
    """
    from mpi4py import MPI

    if comm is None or (isinstance(comm, str) and comm == "world"):
        return MPI.COMM_WORLD
    if isinstance(comm, str) and comm == "self":
        return MPI.COMM_SELF
    if isinstance(comm, str):
        raise ValueError(f"comm must be None, 'world', 'self' or an mpi4py intracommunicator; got {comm!r}")
    return resolve_comm(comm)


def _is_dataset(obj: Any) -> bool:
    if obj is None or isinstance(obj, np.ndarray):
        return False
    from hpcml.data.h5 import H5Dataset

    return isinstance(obj, H5Dataset)


class _BaseSGD(BaseEstimator):
    """Shared fitting machinery (not public)."""

    _losses: tuple[str, ...] = ()
    _is_classifier = False

    # ------------------------------------------------------------------ params
    def _check_params(self) -> None:
        if self.loss not in self._losses:
            raise ValueError(f"loss must be one of {', '.join(self._losses)}; got {self.loss!r}")
        if self.penalty not in L.PENALTIES and self.penalty != "none":
            raise ValueError(f"penalty must be 'l2', 'l1', 'elasticnet' or None; got {self.penalty!r}")
        if self.learning_rate not in SCHEDULES:
            raise ValueError(f"learning_rate must be one of {', '.join(SCHEDULES)}; got {self.learning_rate!r}")
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling must be 'global' or 'local'; got {self.sampling!r}")
        batch = self.batch_size
        if not (
            (isinstance(batch, str) and batch == "auto")
            or (isinstance(batch, int | np.integer) and not isinstance(batch, bool) and batch >= 1)
        ):
            raise ValueError(f"batch_size must be 'auto' or a positive integer; got {batch!r}")
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if not self.eta0 > 0:
            raise ValueError(f"eta0 must be > 0; got {self.eta0!r}")
        if not 0.0 <= self.eta_min <= self.eta0:
            raise ValueError(f"eta_min must be in [0, eta0]; got {self.eta_min!r}")
        if self.power_t < 0:
            raise ValueError(f"power_t must be >= 0; got {self.power_t!r}")
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"tol must be >= 0 or None; got {self.tol!r}")
        for name in ("fit_intercept", "nesterov", "early_stopping"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.nesterov and not self.momentum > 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha!r}")
        if not 0.0 <= self.l1_ratio <= 1.0:
            raise ValueError(f"l1_ratio must be in [0, 1]; got {self.l1_ratio!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}")
        if not (isinstance(self.n_iter_no_change, int | np.integer) and self.n_iter_no_change >= 1):
            raise ValueError(f"n_iter_no_change must be a positive integer; got {self.n_iter_no_change!r}")
        if not (isinstance(self.warmup_steps, int | np.integer) and self.warmup_steps >= 0):
            raise ValueError(f"warmup_steps must be a non-negative integer; got {self.warmup_steps!r}")

    # ------------------------------------------------------------ clone/pickle
    def __sklearn_clone__(self) -> _BaseSGD:
        """Clone with the communicator kept by reference (communicators are handles, not data)."""
        params = self.get_params(deep=False)
        comm = params.pop("comm")
        return type(self)(**{k: clone(v, safe=False) for k, v in params.items()}, comm=comm)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the communicator handle: ``COMM_SELF`` becomes ``"self"``, any other ``None``."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        comm = state.get("comm")
        if comm is not None and not isinstance(comm, str):
            from mpi4py import MPI

            state["comm"] = "self" if comm == MPI.COMM_SELF else None
        return state

    # -------------------------------------------------------------- data setup
    def _local_data(
        self, X: Any, y: Any, sample_weight: Any, sharded: bool, rank: int, size: int
    ) -> tuple[Any, Any, Any, int, int, int]:
        """Rows of the calling rank: ``(X, y, w or None, n_global or -1, start or -1, d)``.  No collectives."""
        if _is_dataset(X):
            if y is not None:
                raise ValueError("y must be None when X is an H5Dataset (the target is read from the file)")
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight must be None when X is an H5Dataset (name the weights dataset: "
                    "H5Dataset(path, sample_weight=...))"
                )
            from hpcml.sgd._io import dataset_rows, read_rows

            n = dataset_rows(X)
            start, stop = shard_range(n, rank, size)
            Xl, yl, wl = read_rows(X, start, stop)
            where = f"{X.path}: rows {start}:{stop}"
            self._check_finite(Xl, yl, where)
            if self._is_classifier:
                _check_labels(yl, where)
            if wl is not None:
                wl = self._check_weights(wl, Xl, where)
            for attr in ("feature_names_in_",):
                if hasattr(self, attr):
                    delattr(self, attr)
            return Xl, yl, wl, n, start, Xl.shape[1]
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None (or pass an H5Dataset as X)"
            )
        try:
            Xa, ya = validate_data(
                self,
                X,
                y,
                dtype=[np.float64, np.float32],
                y_numeric=not self._is_classifier,
                accept_sparse=False,
                ensure_min_samples=0 if sharded else 2,
            )
        except ValueError as exc:
            raise InvalidData(str(exc)) from None
        if self._is_classifier:
            _check_labels(ya, "y")
        wa = None if sample_weight is None else self._check_weights(sample_weight, Xa, "sample_weight")
        if sharded:
            return Xa, ya, wa, -1, -1, Xa.shape[1]
        n = Xa.shape[0]
        start, stop = shard_range(n, rank, size)
        return Xa[start:stop], ya[start:stop], None if wa is None else wa[start:stop], n, start, Xa.shape[1]

    @staticmethod
    def _check_weights(sample_weight: Any, X: np.ndarray, where: str) -> np.ndarray:
        try:
            w = check_sample_weight(sample_weight, X, dtype=X.dtype)
        except ValueError as exc:
            raise InvalidData(f"{where}: {exc}") from None
        if not np.isfinite(w).all():
            raise InvalidData(f"{where}: sample weights contain NaN or infinity")
        if (w < 0).any():
            raise InvalidData(f"{where}: sample weights must be >= 0")
        return w

    @staticmethod
    def _check_finite(X: np.ndarray, y: np.ndarray, where: str) -> None:
        if not np.isfinite(X).all():
            raise InvalidData(f"{where}: X contains NaN or infinity")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise InvalidData(f"{where}: y contains NaN or infinity")

    def _agreed_params(self) -> tuple[tuple[str, str], ...]:
        """The parameters every rank must share (all but ``comm`` and ``verbose``), as comparable text."""
        return tuple(
            (k, "RandomState" if isinstance(v, np.random.RandomState) else repr(v))
            for k, v in sorted(self.get_params(deep=False).items())
            if k not in ("comm", "verbose")
        )

    def _fit_setup(self, comm: Any, X: Any, y: Any, sample_weight: Any, sharded: bool) -> tuple[Any, ...]:
        rank, size = comm.Get_rank(), comm.Get_size()

        def local_data() -> tuple[Any, Any, Any, int, int, int]:
            self._check_params()
            return self._local_data(X, y, sample_weight, sharded, rank, size)

        local = local_data() if size == 1 else agree(comm, local_data)
        assert local is not None
        Xl, yl, wl, n, start, d = local
        info = comm.allgather((Xl.shape[0], d, n, start, wl is not None, self._agreed_params()))
        differ = sorted({k for i in info for k, v in i[5] if dict(info[0][5]).get(k) != v})
        if differ:
            raise _everywhere(
                ValueError(
                    f"{type(self).__name__} has different parameters on different ranks ({', '.join(differ)}); "
                    "every rank of comm must fit the same estimator"
                )
            )
        if len({i[4] for i in info}) != 1:
            raise _everywhere(InvalidData("sample_weight was given on some ranks but not on others"))
        dims = {i[1] for i in info}
        if len(dims) != 1:
            raise _everywhere(InvalidData(f"ranks disagree on the number of features: {sorted(dims)}"))
        if sharded:
            counts = [i[0] for i in info]
            n = int(sum(counts))
            start = int(sum(counts[:rank]))
            if n < 2:
                raise _everywhere(InvalidData(f"need at least 2 samples over all ranks, got {n}"))
        elif len({i[2] for i in info}) != 1:
            raise _everywhere(
                InvalidData("ranks were given data sets of different lengths (give every rank the same arrays)")
            )
        stop = start + Xl.shape[0]
        return Xl, yl, wl, n, start, stop, d

    # ------------------------------------------------------------------ train
    def _train(
        self,
        comm: Any,
        X: np.ndarray,
        T: np.ndarray,
        n: int,
        start: int,
        stop: int,
        k: int,
        sw: np.ndarray | None = None,
    ) -> None:
        """Run the epochs.  ``T`` is the encoded target of this rank's rows, ``sw`` their weights."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is checked per epoch
            self._epochs(comm, X, T, n, start, stop, k, sw)

    def _epochs(
        self,
        comm: Any,
        X: np.ndarray,
        T: np.ndarray,
        n: int,
        start: int,
        stop: int,
        k: int,
        sw: np.ndarray | None,
    ) -> None:
        """The optimizer loop: epochs of steps, then the stop rule, until it or ``max_iter`` ends the fit."""
        seed = self._seed(comm)
        train_global, train_local, held_out = self._split_validation(X, T, sw, (n, start, stop), seed)
        B = auto_batch_size(train_global.shape[0]) if isinstance(self.batch_size, str) else int(self.batch_size)
        self.batch_size_ = B
        plan = BatchPlan(comm, self.sampling, train_global, train_local, (n, start, stop), B, seed, X)
        sched = self._schedule(plan.steps_per_epoch)
        opt = self._optimizer(X.shape[1], k, X.dtype)
        ex = GradientExchange(comm, X.shape[1], k, n_extra=2)
        gradient = LocalGradient(self.loss, X, T, sw, plan, k, self._epsilon())
        stop_rule, watch, history = StopRule(self.tol, self.n_iter_no_change), DivergenceWatch(), History()
        epoch = 0
        for epoch in range(int(self.max_iter)):
            wall0, comm0 = time.perf_counter(), ex.comm_time
            lr, loss_sum, seen, compute = _run_epoch(plan.epoch(epoch), gradient, ex, opt, sched)
            train_loss = loss_sum / max(seen, 1)
            validation = None
            if held_out is not None:
                validation, seconds = self._validate(comm, held_out, opt, k, ex)
                compute += seconds
            seconds = (compute, ex.comm_time - comm0, time.perf_counter() - wall0)
            record = history.add(epoch + 1, train_loss, lr, seen, validation, seconds)
            if self.verbose and comm.Get_rank() == 0:
                print(History.line(record), flush=True)
            stop_now = stop_rule(train_loss if validation is None else validation[0])
            stop_now = self._agree_on_epoch(comm, train_loss, opt, epoch + 1, stop_now)
            watch(train_loss, epoch + 1)
            if stop_now:
                break
        else:
            if self.tol is not None:
                warnings.warn(
                    "Maximum number of iteration reached before convergence. Consider increasing max_iter to "
                    "improve the fit.",
                    ConvergenceWarning,
                    stacklevel=4,
                )
        self._set_fitted(comm, opt, ex, history, epoch + 1, n, seed)

    def _epsilon(self) -> float:
        return float(getattr(self, "epsilon", 0.1))

    def _schedule(self, steps_per_epoch: int) -> Schedule:
        return Schedule(
            self.learning_rate,
            float(self.eta0),
            total_steps=steps_per_epoch * int(self.max_iter),
            warmup_steps=int(self.warmup_steps),
            power_t=float(self.power_t),
            eta_min=float(self.eta_min),
        )

    def _optimizer(self, d: int, k: int, dtype: Any) -> Optimizer:
        l2, l1 = L.penalty_parts(self.penalty, float(self.alpha), float(self.l1_ratio))
        return Optimizer(
            d,
            k,
            dtype,
            momentum=float(self.momentum),
            nesterov=bool(self.nesterov),
            l2=l2,
            l1=l1,
            fit_intercept=bool(self.fit_intercept),
        )

    def _split_validation(
        self, X: np.ndarray, T: np.ndarray, sw: np.ndarray | None, bounds: tuple[int, int, int], seed: int
    ) -> tuple[np.ndarray, np.ndarray, tuple[Any, ...] | None]:
        """Training rows (global, local) and this rank's held-out ``(Xv, Tv, wv, sums)`` (None: no early stopping).

        The held-out rows are a global mask that does not depend on the number of ranks.
        """
        n, start, stop = bounds
        if not self.early_stopping:
            return np.arange(n), np.arange(stop - start), None
        full = validation_mask(n, float(self.validation_fraction), seed)
        mine = full[start:stop]
        val_idx = np.flatnonzero(mine)
        wv = None if sw is None else sw[val_idx]
        held_out = (X[val_idx], T[val_idx], wv, np.zeros(5, dtype=np.float64))
        return np.flatnonzero(~full), np.flatnonzero(~mine), held_out

    def _validate(
        self, comm: Any, held_out: tuple[Any, ...], opt: Optimizer, k: int, ex: GradientExchange
    ) -> tuple[tuple[float, float], float]:
        """Validation loss and score over all ranks (one ``Allreduce``), and this rank's compute seconds."""
        Xv, Tv, wv, sums = held_out
        c0 = time.perf_counter()
        self._validation_sums(Xv, Tv, wv, opt.W, opt.b, self._epsilon(), k, sums)
        c1 = time.perf_counter()
        if comm.Get_size() > 1:
            comm.Allreduce(_mpi_in_place(), sums, op=_mpi_sum())
        ex.comm_time += time.perf_counter() - c1
        return self._validation_metrics(sums), c1 - c0

    def _agree_on_epoch(self, comm: Any, train_loss: float, opt: Optimizer, epoch: int, stop_now: bool) -> bool:
        """Rank 0's verdict on divergence (raised as :class:`FitDiverged` by every rank) and on stopping.

        NaN/inf: scikit-learn raises too.  Every rank has the same numbers;
        rank 0's decisions are broadcast anyway so that no rounding difference
        can ever split the ranks.
        """
        diverged = not (np.isfinite(train_loss) and opt.finite())
        if comm.Get_size() > 1:
            diverged, stop_now = comm.bcast((bool(diverged), bool(stop_now)), root=0)
        if diverged:
            exc = FitDiverged(
                f"floating-point overflow at epoch {epoch}: the fit diverged (mean training loss "
                f"{train_loss:.3g}); lower eta0, or scale the input data (StandardScaler or MinMaxScaler)"
            )
            mark_agreed(exc)  # raised by every rank at this same point
            raise exc
        return bool(stop_now)

    def _set_fitted(
        self, comm: Any, opt: Optimizer, ex: GradientExchange, history: History, n_iter: int, n: int, seed: int
    ) -> None:
        self._W, self._b = opt.W, opt.b
        self.n_iter_ = n_iter
        self.t_ = opt.t
        self.loss_curve_ = history.loss_curve
        self.validation_loss_curve_ = history.val_loss_curve
        self.validation_scores_ = history.val_scores
        self.history_ = history.records
        self.timing_ = {
            "rank": comm.Get_rank(),
            "ranks": comm.Get_size(),
            "steps": opt.t,
            "compute_s": history.compute_total,
            "comm_s": history.comm_total,
            "allreduce_calls": ex.calls,
            "buffer_bytes": int(ex.buf.nbytes),
        }
        self.n_samples_seen_ = n
        self.sampling_ = self.sampling
        self.random_state_ = seed

    def _seed(self, comm: Any) -> int:
        if self.random_state is None:
            seed = int(np.random.SeedSequence().entropy % (2**63)) if comm.Get_rank() == 0 else None
            return int(comm.bcast(seed, root=0))
        if isinstance(self.random_state, int | np.integer):
            return int(self.random_state)
        if isinstance(self.random_state, np.random.RandomState):
            # every rank draws from its instance (so it advances as scikit-learn's would);
            # rank 0's draw seeds the fit everywhere
            local = int(self.random_state.randint(np.iinfo(np.int32).max))
            return int(comm.bcast(local, root=0))
        raise ValueError(
            "random_state must be an int, a numpy RandomState or None (every rank must draw the same batches)"
        )

    def _validation_sums(
        self,
        Xv: np.ndarray,
        Tv: np.ndarray,
        wv: np.ndarray | None,
        W: np.ndarray,
        b: np.ndarray,
        eps: float,
        k: int,
        out: np.ndarray,
    ) -> None:
        """Weighted validation sums of this rank: loss, weight, correct or squared residuals, y, y^2."""
        out.fill(0.0)
        if Xv.shape[0] == 0:
            return
        Z = Xv @ W.astype(Xv.dtype, copy=False) + b.astype(Xv.dtype, copy=False)
        w = np.ones(Xv.shape[0]) if wv is None else wv.astype(np.float64)
        value, _ = L.loss_and_dz(self.loss, Z, Tv, eps, None if wv is None else w)
        out[0] = value
        out[1] = float(w.sum())
        if self._is_classifier:
            if k == 1:
                correct = (Z[:, 0] > 0) == (Tv[:, 0] > 0)
            elif self.loss == "log_loss":
                correct = Z.argmax(axis=1) == Tv
            else:
                correct = Z.argmax(axis=1) == Tv.argmax(axis=1)
            out[2] = float(np.dot(correct, w))
        else:
            yv = Tv[:, 0].astype(np.float64)
            r = Z[:, 0] - yv
            out[2] = float(np.dot(r * r, w))
            out[3] = float(np.dot(yv, w))
            out[4] = float(np.dot(yv * yv, w))

    def _validation_metrics(self, s: np.ndarray) -> tuple[float, float]:
        cnt = s[1] if s[1] > 0 else 1.0
        if self._is_classifier:
            return float(s[0] / cnt), float(s[2] / cnt)
        ss_tot = s[4] - s[3] * s[3] / cnt
        r2 = 1.0 - s[2] / ss_tot if ss_tot > 0 else 0.0
        return float(s[0] / cnt), float(r2)

    # --------------------------------------------------------------- predict
    def _scores(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], accept_sparse=False, reset=False)
        coef = np.atleast_2d(self.coef_)
        return X @ coef.T.astype(X.dtype, copy=False) + np.asarray(self.intercept_, dtype=X.dtype)


_PARAM_DOC = """
    penalty : {"l2", "l1", "elasticnet"} or None, default="l2"
        Regulariser; l1 (also the l1 part of elasticnet) is applied after each
        step by clipping every weight towards zero by the cumulative penalty it
        is still owed (Tsuruoka et al., 2009, as scikit-learn's SGD), never
        across zero, so weights become exactly zero.
    alpha : float, default=1e-4
        Regularisation strength (scikit-learn's convention).
    l1_ratio : float, default=0.15
        Elastic-net mixing, 0 <= l1_ratio <= 1.
    fit_intercept : bool, default=True
        Learn an intercept (never penalised).
    max_iter : int, default=1000
        Maximum number of epochs (scikit-learn's default); a
        ``ConvergenceWarning`` is issued when they run out with ``tol`` set.
    tol : float or None, default=1e-3
        Stop when the monitored loss (mean training loss, or validation loss
        with early stopping) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs (scikit-learn's rule and default);
        ``None`` runs all ``max_iter`` epochs.
    batch_size : int or "auto", default="auto"
        **Global** batch size: rows per step summed over all ranks.
        ``"auto"``: ``n_train // 32`` clipped to ``[16, 256]`` (``batch_size_``
        after ``fit``): 256 from 8192 training rows up; smaller sets get at
        least 32 steps per epoch (down to 16-row batches), so that they train
        about as far per epoch as scikit-learn's per-row SGD before ``tol``
        stops the fit.
    sampling : {"global", "local"}, default="global"
        ``"global"``: rank-count invariant batches (same model for any number
        of ranks); ``"local"``: each rank shuffles its own shard and takes
        ``batch_size // n_ranks`` rows per step (faster, no global permutation).
    learning_rate : {"constant", "invscaling", "cosine"}, default="constant"
        Schedule after warm-up (see :mod:`hpcml.sgd.schedules`).
    eta0 : float, default=0.1
        Peak learning rate.  Linear scaling rule: scale it with the global batch.
    power_t : float, default=0.5
        Exponent of ``invscaling``.
    warmup_steps : int, default=0
        Steps of linear warm-up from ``eta0 / warmup_steps`` to ``eta0``.
    eta_min : float, default=0.0
        Final learning rate of ``cosine``.
    momentum : float, default=0.0
        Heavy-ball momentum in [0, 1).
    nesterov : bool, default=False
        Nesterov momentum (needs ``momentum > 0``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (a rank-independent random
        subset) and monitor the validation loss, summed over ranks by Allreduce.
    validation_fraction : float, default=0.1
        Share of rows held out for early stopping.
    n_iter_no_change : int, default=5
        Patience in epochs.
    random_state : int, numpy RandomState or None, default=0
        Seed of every permutation; ``None`` draws one on rank 0 and broadcasts
        it; a RandomState gives one draw on every rank (each rank's instance
        advances) and rank 0's seeds the fit.
    verbose : int, default=0
        Print one line per epoch on rank 0.
    comm : None, "world", "self" or mpi4py.MPI.Intracomm, default=None
        Ranks that train together; ``None`` is ``MPI.COMM_WORLD`` resolved at
        fit time, ``"self"`` trains serially on the calling rank.  Every rank of
        ``comm`` must call ``fit`` together.
"""

_ATTR_DOC = """
    Attributes
    ----------
    coef_ : ndarray
        Weights.
    intercept_ : ndarray
        Intercepts.
    n_iter_ : int
        Epochs run.
    t_ : int
        Optimisation steps taken.
    batch_size_ : int
        The global batch size used (``batch_size``, or what ``"auto"`` chose).
    loss_curve_ : list of float
        Mean training loss (without penalty) per epoch.
    validation_loss_curve_, validation_scores_ : list of float
        Validation loss and score per epoch (early stopping only).
    history_ : list of dict
        Per epoch: losses, learning rate, samples, and this rank's compute and
        communication seconds.
    timing_ : dict
        This rank's totals: steps, compute and Allreduce seconds.
    n_features_in_ : int
        Number of features.
"""


class SGDClassifier(ClassifierMixin, _BaseSGD):
    """Linear classifier trained by synchronous data-parallel mini-batch SGD.

    Parameters
    ----------
    loss : {"log_loss", "hinge"}, default="log_loss"
        ``log_loss``: logistic regression (binary) or multinomial softmax
        (more than two classes); ``hinge``: linear SVM (one-vs-rest columns
        for more than two classes).
    """

    __doc__ = (
        (__doc__ or "")
        + _PARAM_DOC
        + _ATTR_DOC
        + """    classes_ : ndarray
        Class labels, agreed across ranks (union of every rank's labels).
"""
    )

    _losses = L.CLASSIFICATION_LOSSES
    _is_classifier = True

    def __init__(
        self,
        loss: str = "log_loss",
        *,
        penalty: str | None = "l2",
        alpha: float = 1e-4,
        l1_ratio: float = 0.15,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        batch_size: int | str = "auto",
        sampling: str = "global",
        learning_rate: str = "constant",
        eta0: float = 0.1,
        power_t: float = 0.5,
        warmup_steps: int = 0,
        eta_min: float = 0.0,
        momentum: float = 0.0,
        nesterov: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        random_state: int | None = 0,
        verbose: int = 0,
        comm: Any = None,
    ) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.sampling = sampling
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.warmup_steps = warmup_steps
        self.eta_min = eta_min
        self.momentum = momentum
        self.nesterov = nesterov
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.verbose = verbose
        self.comm = comm

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, *, sharded: bool = False) -> SGDClassifier:
        """Train on every rank of ``comm`` together (collective).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or hpcml.data.H5Dataset
            Arrays: the whole data set, the same on every rank (each rank uses
            only its shard of rows), unless ``sharded=True``.  A dataset: each
            rank reads only the rows of its own shard from the file.
        y : array-like of shape (n_samples,), optional
            Labels (``None`` with a dataset).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative per-row weights (each row's gradient and loss are
            multiplied by its weight; steps still average over rows, as
            scikit-learn's SGD does).  With a dataset, name the weights
            dataset instead: ``H5Dataset(path, sample_weight="w")``.
        sharded : bool, default=False
            ``X``/``y`` hold only this rank's rows; the global order is rank 0's
            rows, then rank 1's, and so on.

        Returns
        -------
        self
        """
        comm = resolve_sgd_comm(self.comm)
        Xl, yl, wl, n, start, stop, d = self._fit_setup(comm, X, y, sample_weight, sharded)
        labels = comm.allgather(np.unique(yl))
        classes = np.unique(np.concatenate(labels))
        if classes.shape[0] < 2:  # every rank sees the same classes: raised everywhere, printed once
            raise _everywhere(InvalidData(f"the data has a single class {classes.tolist()}; need at least 2"))
        idx = np.searchsorted(classes, yl)
        k = L.n_outputs(self.loss, classes.shape[0])
        T = L.encode_target(self.loss, idx, classes.shape[0], dtype=Xl.dtype)
        self.classes_ = classes
        self.n_features_in_ = d
        self._train(comm, Xl, T, n, start, stop, k, wl)
        self.coef_ = np.ascontiguousarray(self._W.T)
        self.intercept_ = self._b.copy()
        del self._W, self._b
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores: shape (n,) for two classes, (n, n_classes) otherwise."""
        Z = self._scores(X)
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels."""
        Z = self._scores(X)
        if Z.shape[1] == 1:
            return self.classes_[(Z[:, 0] > 0).astype(np.intp)]
        return self.classes_[Z.argmax(axis=1)]

    def _has_proba(self) -> bool:
        return self.loss == "log_loss"

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (``log_loss`` only): sigmoid or softmax of the scores."""
        Z = self._scores(X).astype(np.float64)
        if Z.shape[1] == 1:
            p = L._sigmoid(Z[:, 0])
            return np.column_stack([1.0 - p, p])
        return L.softmax(Z)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        return np.log(np.clip(self.predict_proba(X), np.finfo(np.float64).tiny, None))


class SGDRegressor(RegressorMixin, _BaseSGD):
    """Linear regressor trained by synchronous data-parallel mini-batch SGD.

    Parameters
    ----------
    loss : {"squared_error", "huber"}, default="squared_error"
        ``squared_error``: ``(p - y)^2 / 2``; ``huber``: quadratic within
        ``epsilon``, linear beyond.
    epsilon : float, default=0.1
        Huber threshold.
    """

    __doc__ = (__doc__ or "") + _PARAM_DOC + _ATTR_DOC

    _losses = L.REGRESSION_LOSSES
    _is_classifier = False

    def __init__(
        self,
        loss: str = "squared_error",
        *,
        epsilon: float = 0.1,
        penalty: str | None = "l2",
        alpha: float = 1e-4,
        l1_ratio: float = 0.15,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        batch_size: int | str = "auto",
        sampling: str = "global",
        learning_rate: str = "constant",
        eta0: float = 0.01,
        power_t: float = 0.5,
        warmup_steps: int = 0,
        eta_min: float = 0.0,
        momentum: float = 0.0,
        nesterov: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        random_state: int | None = 0,
        verbose: int = 0,
        comm: Any = None,
    ) -> None:
        self.loss = loss
        self.epsilon = epsilon
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.sampling = sampling
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.warmup_steps = warmup_steps
        self.eta_min = eta_min
        self.momentum = momentum
        self.nesterov = nesterov
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.verbose = verbose
        self.comm = comm

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, *, sharded: bool = False) -> SGDRegressor:
        """Train on every rank of ``comm`` together (collective).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or hpcml.data.H5Dataset
            See :meth:`SGDClassifier.fit`.
        y : array-like of shape (n_samples,), optional
            Targets (``None`` with a dataset).
        sample_weight : array-like of shape (n_samples,), optional
            See :meth:`SGDClassifier.fit`.
        sharded : bool, default=False
            ``X``/``y`` hold only this rank's rows.

        Returns
        -------
        self
        """
        comm = resolve_sgd_comm(self.comm)
        Xl, yl, wl, n, start, stop, d = self._fit_setup(comm, X, y, sample_weight, sharded)
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0; got {self.epsilon!r}")
        T = L.encode_target(self.loss, yl, 1, dtype=Xl.dtype)
        self.n_features_in_ = d
        self._train(comm, Xl, T, n, start, stop, 1, wl)
        self.coef_ = self._W[:, 0].copy()
        self.intercept_ = self._b.copy()
        del self._W, self._b
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values."""
        return self._scores(X)[:, 0]


#: ``batch_size="auto"``: ``n_train // AUTO_STEPS_PER_EPOCH`` clipped to ``[AUTO_BATCH_MIN, AUTO_BATCH_MAX]``.
AUTO_BATCH_MIN, AUTO_BATCH_MAX, AUTO_STEPS_PER_EPOCH = 16, 256, 32


def auto_batch_size(n_train: int) -> int:
    """``batch_size="auto"``: ``n_train // 32`` clipped to ``[16, 256]`` (the same on every rank).

    Large sets get the throughput batch (256); small ones at least 32 steps per
    epoch, but never batches under 16 rows (single-row steps at a constant rate
    diverge easily on unscaled data).
    """
    return max(AUTO_BATCH_MIN, min(AUTO_BATCH_MAX, int(n_train) // AUTO_STEPS_PER_EPOCH))


def _run_epoch(
    batches: Any, gradient: LocalGradient, ex: GradientExchange, opt: Optimizer, sched: Schedule
) -> tuple[float, float, int, float]:
    """One epoch of steps: local gradient, ``Allreduce``, update.  Returns (last lr, loss sum, rows, compute s)."""
    lr = sched(opt.t)
    loss_sum, seen, compute = 0.0, 0, 0.0
    for rows, gsize in batches:
        c0 = time.perf_counter()
        gradient(rows, opt.Wc, opt.bc, ex)
        c1 = time.perf_counter()
        ex.allreduce()
        c2 = time.perf_counter()
        count = gsize if gsize > 0 else ex.extra[1]
        if count > 0:
            lr = sched(opt.t)
            opt.step(ex.gW, ex.gb, count, lr)
            loss_sum += ex.extra[0]
            seen += int(count)
        compute += (c1 - c0) + (time.perf_counter() - c2)
    return lr, loss_sum, seen, compute


def _mpi_sum() -> Any:
    from mpi4py import MPI

    return MPI.SUM


def _mpi_in_place() -> Any:
    from mpi4py import MPI

    return MPI.IN_PLACE
