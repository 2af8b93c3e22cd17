"""What the paper counts (SPEC §4): successes, success rate, avg|Z_true - Z_adv| over successes,
per repeat and as mean ± std over repeats, plus per-image records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .base import Judgement


def repeat_summary(j: Judgement) -> dict[str, Any]:
    """Numbers of one repeat. avg_abs_z is over successful images only (None when there are none)."""
    n = int(j.success.numel())
    successes = int(j.success.sum())
    abs_z = j.abs_z[j.success]
    return {
        "attacked": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "avg_abs_z": float(abs_z.mean()) if successes else None,
    }


def image_records(indices: Sequence[int], labels: Tensor, j: Judgement, queries: Tensor,
                  details: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """One record per attacked image: test-set index, labels, true-class probability before and
    after, |Z|, the perturbation sizes, and the attack's own per-image ``details`` (pixels painted,
    the ensemble member that broke it)."""
    rows = zip(indices, labels.tolist(), j.adv_label.tolist(), j.success.tolist(), j.p_true_clean.tolist(),
               j.p_true_adv.tolist(), j.abs_z.tolist(), j.linf.tolist(), j.l2.tolist(), j.l1.tolist(),
               j.l0_pixels.tolist(), queries.tolist())
    records = [
        {"index": int(i), "label": y, "adv_label": a, "success": s, "p_true_clean": round(pc, 6),
         "p_true_adv": round(pa, 6), "abs_z": round(z, 6), "linf": round(li, 6), "l2": round(l2, 6),
         "l1": round(l1, 6), "l0_pixels": l0, "queries": q}
        for i, y, a, s, pc, pa, z, li, l2, l1, l0, q in rows
    ]
    for key, values in (details or {}).items():
        if len(values) != len(records):
            raise ValueError(f"attack detail {key!r} has {len(values)} entries for {len(records)} images")
        for record, value in zip(records, values):
            record[key] = value
    return records


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std 0 for one value, None for none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def aggregate(repeats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over repeats of successes, success rate and avg|Z|."""
    out: dict[str, Any] = {"repeats": len(repeats)}
    for key in ("successes", "success_rate", "avg_abs_z"):
        m, s = mean_std([r[key] for r in repeats])
        out[f"{key}_mean"], out[f"{key}_std"] = m, s
    return out


def gain_vs_relu(successes: float, relu_successes: float) -> float | None:
    """Robustness gain as the paper quotes it: 1 - successes(act) / successes(relu)."""
    if not relu_successes:
        return None
    return 1.0 - successes / relu_successes
