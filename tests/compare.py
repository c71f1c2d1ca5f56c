"""Compare hpcml results with scikit-learn's, key by key."""

from __future__ import annotations

from typing import Any

import numpy as np

TIME_KEYS = ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")


def assert_cv_results_equal(
    ours: dict[str, Any], theirs: dict[str, Any], atol: float = 1e-12, rtol: float = 0.0, extra: tuple[str, ...] = ()
) -> None:
    """Same keys (ours may add ``extra``), same params, scores within ``atol``, same ranks."""
    assert set(ours) - set(extra) == set(theirs), set(ours) ^ set(theirs)
    for key, value in theirs.items():
        if key in TIME_KEYS:
            continue
        mine = ours[key]
        if key == "params":
            assert list(mine) == list(value), key
        elif key.startswith("param_"):
            assert [None if m else v for v, m in zip(np.ma.getdata(value), np.ma.getmaskarray(value))] == [
                None if m else v for v, m in zip(_data(mine), _mask(mine))
            ], key
        elif key.startswith("rank_"):
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(value), err_msg=key)
        else:
            np.testing.assert_allclose(
                np.asarray(mine, dtype=float), np.asarray(value, dtype=float), rtol=rtol, atol=atol, err_msg=key
            )


def _data(values: Any) -> list[Any]:
    if isinstance(values, np.ma.MaskedArray):
        return list(np.ma.getdata(values))
    return list(values)


def _mask(values: Any) -> list[bool]:
    if isinstance(values, np.ma.MaskedArray):
        return list(np.ma.getmaskarray(values))
    return [v is None for v in values]
