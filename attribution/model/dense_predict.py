"""A booster's raw scores for a dense float32 matrix: xgboost's own C call (XGBoosterPredictFromDense), the
one Booster.inplace_predict makes, without the Python around it.

inplace_predict spends ~0.3 ms of Python per call before and after that call (input type dispatch, the
arguments and array description serialised with json.dumps, a class defined per call to read the result):
for a single click that is as much as the booster's own work, on every request. Here the arguments are
built once and the array description is formatted directly. `tests/test_model.py` holds the two to equal
outputs; the private names used are those of the pinned xgboost (requirements.lock).
"""

from __future__ import annotations

import ctypes

import numpy as np
import xgboost as xgb
from xgboost.core import _LIB, _check_call, c_bst_ulong

# value predictions (type 0), every tree, missing = NaN: inplace_predict's defaults
_ARGS = b'{"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "missing": NaN, ' \
        b'"strict_shape": false, "cache_id": 0}'
_NO_PROXY = ctypes.c_void_p()


def predict_dense(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """Scores (float32, one per row) of a C-contiguous 2-D float32 matrix with the booster's features."""
    if matrix.dtype != np.float32 or matrix.ndim != 2 or not matrix.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous 2-D float32 matrix, got {matrix.dtype} {matrix.shape}")
    if matrix.shape[1] != booster.num_features():
        raise ValueError(f"feature shape mismatch, expected {booster.num_features()}, got {matrix.shape[1]}")
    rows = matrix.shape[0]
    if rows == 0:
        return np.empty(0, np.float32)
    iface = (b'{"data": [%d, true], "shape": [%d, %d], "strides": null, "typestr": "<f4", "version": 3}'
             % (matrix.ctypes.data, rows, matrix.shape[1]))
    shape = ctypes.POINTER(c_bst_ulong)()
    dims = c_bst_ulong()
    preds = ctypes.POINTER(ctypes.c_float)()
    _check_call(_LIB.XGBoosterPredictFromDense(booster.handle, iface, _ARGS, _NO_PROXY, ctypes.byref(shape),
                                               ctypes.byref(dims), ctypes.byref(preds)))
    size = int(np.prod([shape[i] for i in range(dims.value)]))
    if size != rows:
        raise ValueError(f"the booster returned {size} scores for {rows} rows (a multi-output model?)")
    return np.ctypeslib.as_array(preds, (rows,)).copy()  # the booster reuses its buffer on the next call
