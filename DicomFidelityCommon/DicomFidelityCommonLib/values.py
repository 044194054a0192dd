"""DICOM value texts we write: Decimal Strings (DS) that always fit the 16-character limit.

One formatter for every object we write (reference CT series, RTSTRUCT contours, RTDOSE geometry): either as much
precision as 16 characters hold, or a fixed number of decimals with trailing zeros trimmed (falling back to the
most precise form that fits when a value is too large for them).
"""

from __future__ import annotations

import numpy as np

DS_MAX_LENGTH = 16


def ds_text(value: float, decimals: int | None = None) -> str:
    """One DS value of at most 16 characters; ``decimals`` None gives the most precision that fits."""
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{value} cannot be written as a DICOM decimal string")
    if decimals is not None:
        text = f"{round(value, decimals) + 0.0:.{decimals}f}".rstrip("0").rstrip(".")
        text = "0" if text in ("", "-0", "-") else text
        if len(text) <= DS_MAX_LENGTH:
            return text
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= DS_MAX_LENGTH:
            return text
    return f"{value:.4g}"


def ds_texts(values, decimals: int | None = None) -> list[str]:
    """``ds_text`` of every value (a scalar counts as one)."""
    return [ds_text(v, decimals) for v in np.atleast_1d(np.asarray(values, dtype=float)).ravel()]


def ds_multi_value_bytes(values, decimals: int) -> bytes:
    """A whole multi-valued DS element value, encoded and padded to even length: pydicom writes it as it is
    instead of validating a million decimal strings one by one (RTSTRUCT ContourData)."""
    rounded = np.round(np.asarray(values, dtype=float).ravel(), decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    if rounded.size and np.abs(rounded).max() < 10.0 ** (DS_MAX_LENGTH - decimals - 2):
        text = "\\".join(f"{v:.{decimals}f}".rstrip("0").rstrip(".") for v in rounded.tolist()).encode("ascii")
    else:
        text = "\\".join(ds_texts(rounded, decimals)).encode("ascii")
    return text + b" " if len(text) % 2 else text
