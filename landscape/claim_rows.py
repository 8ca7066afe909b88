"""The rows of the claims table (``results/tables/claims.csv``), shared by both papers' claims."""

from __future__ import annotations

from typing import Any

import pandas as pd

CLAIM_COLUMNS = [
    "claim",
    "paper",
    "figure",
    "statistic",
    "value",
    "threshold",
    "holds",
    "detail",
]


def claim_row(
    claim, figure, statistic, value, threshold, holds, detail, paper: str
) -> dict[str, Any]:
    """One row of the claims table."""
    return {
        "claim": claim,
        "paper": paper,
        "figure": figure,
        "statistic": statistic,
        "value": value,
        "threshold": threshold,
        "holds": holds,
        "detail": detail,
    }


def not_measured(claim, figure, statistic, threshold, reason, paper: str) -> dict[str, Any]:
    """A claim the artifacts cannot measure: ``holds`` is NA and ``detail`` says what to add."""
    value, holds = float("nan"), pd.NA
    detail = f"not measured: {reason}"
    return claim_row(claim, figure, statistic, value, threshold, holds, detail, paper)
