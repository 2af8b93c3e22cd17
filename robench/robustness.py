"""Worst case per threat model, weaker attacks as lower bounds, and gradient-masking flags.

Every stored setting belongs to a threat point: a norm and a budget (``l0 3px``, ``linf 8/255``).
At each point of each model row this module gathers what every attack found, image by image, and
derives:

- robust accuracy under the worst case: an image is robust only when no attack, in no repeat,
  fooled it (AutoAttack's rule), counted on the images every attack there attacked; where none
  of the threat's strongest attacks (``AttackSpec.strongest``) took part it is only an upper bound, and
  marked so;
- which counts are lower bounds: a cell is marked when another attack at the same point fools
  clearly more images (by more than max(1, 2 std) on average), so a weak attack cannot pass for
  robustness;
- sanity flags after AutoAttack's checks for gradient masking: a black-box attack beating every
  white-box one at the same budget, PGD not monotone in epsilon, PGD below FGSM.

A minimal-norm attack (FMN) has no budget: its stored distances give its successes at every point
of its norm that another result uses, and at the standard grid ``CURVE_GRIDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .attacks import eps_text, get_attack
from .attacks.metrics import mean_std
from .attacks.spec import strongest_for
from .config import config_from_dict

# Budgets at which a minimal-norm result is read when nothing else names them (pixels for l0).
CURVE_GRIDS: dict[str, tuple[float, ...]] = {
    "linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    "l2": (0.1, 0.25, 0.5, 1.0),
    "l1": (1.0, 2.5, 5.0, 10.0),
    "l0": (1.0, 3.0, 5.0, 10.0),
}
DISTANCE_KEY = {"linf": "linf", "l2": "l2", "l1": "l1", "l0": "l0_pixels"}  # per-image record fields
NORM_ORDER = ("l0", "l1", "l2", "linf")

RowKey = tuple[str, str, str, str]  # model, dataset, checkpoint tag, act


@dataclass(frozen=True, order=True)
class Threat:
    norm: str
    budget: float

    @property
    def label(self) -> str:
        if self.norm == "l0":
            return f"l0 {self.budget:g}px"
        return f"linf {eps_text(self.budget)}" if self.norm == "linf" else f"{self.norm} {self.budget:g}"

    def sort_key(self) -> tuple[int, float]:
        return NORM_ORDER.index(self.norm), self.budget


def threat(norm: str, budget: float) -> Threat:
    """A threat point with its budget rounded, so 8/255 from one file meets 8/255 from another."""
    return Threat(norm, round(float(budget), 9))


@dataclass
class Evidence:
    """What one attack (one result file, one setting) found at one threat point of one row."""

    ident: str  # attack plus variant, e.g. "sparse_rs", "pgd-linf", "pixel-best1-xpixel"
    attack: str
    white_box: bool
    successes: float  # mean over repeats
    std: float
    attacked: frozenset[int]  # test-set indices
    fooled: frozenset[int]  # fooled in any repeat
    derived: bool = False  # read off a minimal-norm attack's distances
    attacks: frozenset[str] = frozenset()  # the registered attacks behind it (an ensemble's members)

    @property
    def single(self) -> bool:
        """One attack on its own, not a composite of several (an ensemble)."""
        return self.attacks <= {self.attack}


def result_ident(result: dict[str, Any]) -> tuple[str, Any]:
    """The attack's identity in tables (attack plus its variant) and its spec."""
    spec = get_attack(result["attack"])
    config = config_from_dict(spec.config_cls, dict(result["attack_config"]), f"{result['attack']} config")
    variant = spec.variant(config)
    return (f"{result['attack']}-{variant}" if variant else result["attack"]), spec


def _behind(result: dict[str, Any], spec: Any) -> frozenset[str]:
    """The registered attacks behind a result: a composite's members, else the attack itself."""
    if spec.behind is None:
        return frozenset({result["attack"]})
    return frozenset(spec.behind(config_from_dict(spec.config_cls, dict(result["attack_config"]), result["attack"])))


def row_key(result: dict[str, Any], tag: str) -> RowKey:
    return result["model"], result["dataset"], tag, result["act"]


@dataclass
class Evidences:
    """All evidence of a set of results: row -> threat point -> [Evidence]."""

    by_row: dict[RowKey, dict[Threat, list[Evidence]]] = field(default_factory=dict)

    def add(self, row: RowKey, point: Threat, ev: Evidence) -> None:
        self.by_row.setdefault(row, {}).setdefault(point, []).append(ev)


def _fooled(setting: dict[str, Any], within: tuple[str, float] | None = None) -> tuple[list[int], frozenset[int]]:
    """Per-repeat success counts and the union of fooled indices; ``within`` = (record key, budget)
    counts only successes whose stored distance is inside the budget."""
    counts, fooled = [], set()
    for rep in setting["repeats"]:
        hits = [r["index"] for r in rep["images"] if r["success"]
                and (within is None or r[within[0]] <= within[1] * (1 + 1e-6) + 1e-9)]
        counts.append(len(hits))
        fooled.update(hits)
    return counts, frozenset(fooled)


def _attacked(setting: dict[str, Any]) -> frozenset[int]:
    reps = setting["repeats"]
    return frozenset(r["index"] for r in reps[0]["images"]) if reps else frozenset()


def gather(results: list[tuple[str, dict[str, Any]]], tag_of: Any) -> Evidences:
    """Evidence from finished results (``(name, result)`` pairs); ``tag_of(result)`` names its row's
    checkpoint tag. Minimal-norm results are read at every point of their norm that a budgeted
    result uses, and on ``CURVE_GRIDS``."""
    evs = Evidences()
    minimal = []
    for _, res in results:
        ident, spec = result_ident(res)
        row = row_key(res, tag_of(res))
        for setting, norm, budget in setting_threats(res, spec):
            if budget is None:
                minimal.append((row, ident, spec, norm, setting))
                continue
            counts, fooled = _fooled(setting)
            m, s = mean_std(counts)
            evs.add(row, threat(norm, budget), Evidence(ident, res["attack"], spec.white_box, m or 0.0, s or 0.0,
                                                        _attacked(setting), fooled, attacks=_behind(res, spec)))
    for row, ident, spec, norm, setting in minimal:
        points = {threat(norm, b) for b in CURVE_GRIDS[norm]}
        points |= {p for p in evs.by_row.get(row, {}) if p.norm == norm}
        for point in sorted(points):
            counts, fooled = _fooled(setting, (DISTANCE_KEY[norm], point.budget))
            m, s = mean_std(counts)
            evs.add(row, point, Evidence(ident, spec.name, spec.white_box, m or 0.0, s or 0.0, _attacked(setting),
                                         fooled, derived=True, attacks=frozenset({spec.name})))
    return evs


@dataclass
class RobustCell:
    robust: int  # images no attack fooled
    images: int  # images every attack at this point attacked
    attacks: list[str]  # idents that took part
    strongest: str  # the single attack that fooled most of them
    strongest_fooled: int
    strong: bool = True  # False: none of the threat's strongest attacks took part (an upper bound)


def robust_test_accuracy(clean: float | None, robust: int, attacked: int) -> float | None:
    """Robust accuracy on the test set, as a fraction: the clean accuracy times the share of the
    attacked images (the correctly classified ones) that no attack fooled, so never above the clean
    accuracy. None without a clean accuracy or an attacked image. The one formula the report's
    standard table, the leaderboard, the trade-off plot and ``robench stats`` share."""
    if clean is None or attacked <= 0:
        return None
    return float(clean) * robust / attacked


def worst_case(evs: Evidences) -> dict[RowKey, dict[Threat, RobustCell]]:
    """Robust images per row and threat point: the union of every attack's fooled images, on the
    images they all attacked (ensemble results take part like any attack)."""
    out: dict[RowKey, dict[Threat, RobustCell]] = {}
    for row, points in evs.by_row.items():
        for point, items in points.items():
            common = frozenset.intersection(*(e.attacked for e in items))
            broken = frozenset().union(*(e.fooled for e in items)) & common
            best = max(items, key=lambda e: (len(e.fooled & common), e.ident))
            strong = bool(set(strongest_for(point.norm)) & frozenset().union(*(e.attacks for e in items)))
            out.setdefault(row, {})[point] = RobustCell(len(common) - len(broken), len(common),
                                                        sorted({e.ident for e in items}), best.ident,
                                                        len(best.fooled & common), strong)
    return out


def lower_bounds(evs: Evidences) -> dict[tuple[RowKey, str, Threat], str]:
    """(row, attack ident, point) -> the stronger attack that makes this count a lower bound."""
    marks = {}
    for row, points in evs.by_row.items():
        for point, items in points.items():
            for e in items:
                stronger = [o for o in items if o.ident != e.ident
                            and o.successes - e.successes > max(1.0, 2 * max(o.std, e.std))]
                if stronger:
                    marks[(row, e.ident, point)] = max(stronger, key=lambda o: o.successes).ident
    return marks


def setting_threats(res: dict[str, Any], spec: Any) -> list[tuple[dict[str, Any], str, float | None]]:
    """Each setting of a result with its threat model: (setting, norm, budget or None)."""
    out = []
    for setting in res["settings"]:
        config = config_from_dict(spec.config_cls, dict(setting["config"]), f"{res['attack']} setting")
        out.append((setting, *spec.threat(config)))
    return out


# A minimal-norm attack with no budget should fool every image of an undefended model at some
# distance; one that leaves more than this share standing stopped short, and its counts at every
# budget undercount. (Before its restart, robench's projected FMN L2 left 24-34 % of the MNIST MLPs'
# ReLU images unfooled, 48-68 % of S-APL/APL/PReLU ones and every swish one; 1000 steps did no better.)
UNCONVERGED_SHARE = 0.05


def unconverged_flags(results: list[tuple[str, dict[str, Any]]], tag_of: Any) -> list[str]:
    """Warnings for minimal-norm runs (no budget) that left over UNCONVERGED_SHARE of their images
    unfooled: read as robustness, they would flatter whichever model the attack failed on."""
    flags = []
    for _, res in results:
        ident, spec = result_ident(res)
        for setting, norm, budget in setting_threats(res, spec):
            records = [r for rep in setting["repeats"] for r in rep["images"]]
            missed = sum(not r["success"] for r in records)
            if budget is None and missed > UNCONVERGED_SHARE * len(records):
                flags.append(f"{'/'.join(row_key(res, tag_of(res)))} {ident}: {missed} of {len(records)} images "
                             f"not fooled at any distance; the attack stopped short, so its {norm} successes at every "
                             f"budget, and robust accuracy resting on them, flatter the model (check with another "
                             f"{norm} attack)")
    return flags


# Threats where a white-box attack should match a black-box one at the same budget, so a black-box
# win hints at masked gradients (AutoAttack's check). Not L0: there a score-based search beats the
# gradient attacks on any model (Sparse-RS fooled 78-100 of 100 at 3-5 px where FMN L0 fooled 29-60,
# on every LeNet-5 seed model, ReLU included), so a black-box win says nothing about masking.
MASKING_THREATS = ("linf", "l2", "l1")


def sanity_flags(evs: Evidences) -> list[str]:
    """Warnings that hint at gradient masking (AutoAttack's checks); a tolerance of one image on
    average keeps random repeats from raising them."""
    flags = []
    for row, points in sorted(evs.by_row.items()):
        name = "/".join(row)
        for point, items in sorted(points.items(), key=lambda kv: kv[0].sort_key()):
            singles = [e for e in items if e.single]
            black = [e for e in singles if not e.white_box]
            white = [e for e in singles if e.white_box]
            if black and white and point.norm in MASKING_THREATS:
                b, w = max(black, key=lambda e: e.successes), max(white, key=lambda e: e.successes)
                if b.successes > w.successes + 1:
                    flags.append(f"{name} {point.label}: black-box {b.ident} ({b.successes:g}) beats every white-box "
                                 f"attack (best {w.ident}, {w.successes:g}): gradients may be masked")
            steps = [(p, f) for p in singles for f in singles if get_attack(f.attack).single_step_of == p.attack]
            for p, f in steps:
                if p.successes + 1 < f.successes:
                    flags.append(f"{name} {point.label}: {p.ident} ({p.successes:g}) succeeds less often than "
                                 f"{f.ident} ({f.successes:g}), a single step of it: gradients may be masked")
        by_ident: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for point, items in points.items():
            for e in items:
                if get_attack(e.attack).monotone and not e.derived:
                    by_ident.setdefault((e.ident, point.norm), []).append((point.budget, e.successes))
        for (ident, norm), curve in sorted(by_ident.items()):
            curve.sort()
            drops = [(a, b) for a, b in zip(curve, curve[1:]) if b[1] + 1 < a[1]]
            for (e1, s1), (e2, s2) in drops:
                flags.append(f"{name} {ident}: successes fall from {s1:g} at {threat(norm, e1).label} to {s2:g} at "
                             f"{threat(norm, e2).label}; an iterative attack should be monotone in epsilon")
    return flags


def median_distance(setting: dict[str, Any], norm: str) -> float | None:
    """Median over attacked images (and repeats) of the minimal adversarial distance, an image the
    attack did not fool counting as infinitely far; None when over half were not fooled."""
    values = sorted(r[DISTANCE_KEY[norm]] if r["success"] else float("inf")
                    for rep in setting["repeats"] for r in rep["images"])
    if not values:
        return None
    mid = values[(len(values) - 1) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    return None if mid == float("inf") else mid
