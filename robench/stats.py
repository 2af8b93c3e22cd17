"""Differences between activations across training seeds, with a t-test the paper does not give.

The paper compares one trained model per activation. Two models trained with different seeds
differ as well, so a gain is a finding only where it is larger than that seed-to-seed spread; a
spread across attack repeats on one model says nothing about it. This module groups checkpoints
(clean test error, the paper's Tables 1 and 7; final training loss, figure 3) and attack results
(successes) by model, dataset, activation and schedule over training seeds, and tests each
activation against a reference with Welch's two-sample t-test (what
``scipy.stats.ttest_ind(equal_var=False)`` computes, from the same means, variances and
Welch-Satterthwaite degrees of freedom as the confidence interval): it does not assume two
activations vary equally across seeds. The paper does not say which t-test it ran.

Seeds come from the checkpoint name (``...-s3.pt``: seed 3) for results and from the stored
training config for checkpoints; a result made on a checkpoint with another naming is left out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .attacks.metrics import mean_std
from .attacks.spec import get_attack
from .checkpoints import checkpoint_files, read_history, read_meta
from .errors import CheckpointError, ResultError
from .tables import checkpoint_tag
from .robustness import median_distance, robust_test_accuracy
from .results import OnError, list_results, warn_skipped

SAPL_FAMILY = "sapl"  # activations whose name starts with this are "ours", never the baseline


@dataclass
class Group:
    """One metric of one model × dataset × activation × schedule, one value per training seed."""

    model: str
    dataset: str
    act: str
    metric: str  # "clean error %" or "<attack> <setting> successes"
    schedule: str  # what else must match for two groups to be comparable
    values: dict[int, float] = field(default_factory=dict)  # training seed -> value

    @property
    def family(self) -> tuple[str, str, str, str]:
        return self.model, self.dataset, self.metric, self.schedule

    def stats(self) -> tuple[float | None, float | None]:
        return mean_std([self.values[s] for s in sorted(self.values)])


@dataclass
class Comparison:
    group: Group
    mean: float | None
    std: float | None
    reference: str | None = None  # the activation it is tested against
    is_reference: bool = False
    diff: float | None = None  # mean - reference mean
    t: float | None = None
    p: float | None = None
    ci95: tuple[float, float] | None = None  # Welch 95 % confidence interval of ``diff``
    d: float | None = None  # Cohen's d: diff over the root mean of the two variances
    p_holm: float | None = None  # ``p`` adjusted for the family's comparisons (Holm), see :func:`holm`


@dataclass
class StatsTable:
    title: str
    rule: str  # how the reference was chosen
    rows: list[Comparison]


def _welch_parts(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float, float] | None:
    """mean(a) - mean(b), the squared standard error of that difference, its Welch-Satterthwaite
    degrees of freedom and the two sample variances; None with fewer than two values on a side or
    no spread on either. The one place the t-test, its interval and Cohen's d take them from."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    if va == 0 and vb == 0:
        return None
    se2 = va / len(a) + vb / len(b)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return ma - mb, se2, df, va, vb


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """Welch's t statistic and two-sided p of ``a`` vs ``b``; None when it is undefined (fewer
    than two values on a side, or no spread on either side). One side without spread (three seeds
    with the same test error) is defined by the other side's."""
    from scipy import stats as sps

    parts = _welch_parts(a, b)
    if parts is None or (len(set(a)) == 1 and len(set(b)) == 1):
        return None, None
    diff, se2, df, _, _ = parts
    t = diff / math.sqrt(se2)
    p = 2 * float(sps.t.sf(abs(t), df))
    return (t, p) if math.isfinite(t) and math.isfinite(p) else (None, None)


def effect(a: Sequence[float], b: Sequence[float]) -> tuple[tuple[float, float] | None, float | None]:
    """The 95 % confidence interval of mean(a) - mean(b) under Welch's unequal variances
    (Welch-Satterthwaite degrees of freedom) and Cohen's d (the difference over sqrt of the mean
    of the two sample variances); None where undefined, as for ``welch``. A p-value says whether
    a difference is there; these say how large it is, and how well five seeds pin it down."""
    from scipy import stats as sps

    parts = _welch_parts(a, b)
    if parts is None:
        return None, None
    diff, se2, df, va, vb = parts
    half = float(sps.t.ppf(0.975, df)) * math.sqrt(se2)
    return (diff - half, diff + half), diff / math.sqrt((va + vb) / 2)


def seed_split(tag: str) -> tuple[str, int | None]:
    """A checkpoint tag as (training scheme, seed): ``s3`` -> ("", 3), ``pgd0.1k10-s3`` ->
    (``pgd0.1k10``, 3); a tag without a seed -> (tag, None)."""
    m = re.fullmatch(r"(?:(.*)-)?s(\d+)", tag)
    return (m.group(1) or "", int(m.group(2))) if m else (tag, None)


def seed_from_tag(tag: str) -> int | None:
    return seed_split(tag)[1]


ADV_KEYS = ("adv", "adv_norm", "adv_eps", "adv_steps", "adv_step_size", "trades_beta")


def _schedule(cfg: dict[str, Any]) -> str:
    text = f"{cfg.get('epochs')} ep, bs {cfg.get('batch_size')}, lr {cfg.get('lr')}"
    if cfg.get("augment"):
        text += ", D-A"
    if cfg.get("train_images"):
        text += f", first {cfg['train_images']} train images"
    if cfg.get("adv", "none") != "none":  # an adversarially trained model is never a standard one's seed
        text += ", " + " ".join(f"{k} {cfg.get(k)}" for k in ADV_KEYS if k in cfg)
    if cfg.get("act_options"):
        text += ", " + json.dumps(cfg["act_options"], sort_keys=True)
    return text


CHECKPOINT_METRICS = {  # metric -> how to read it from a checkpoint's metadata; lower is better for each
    "clean error %": lambda meta: float(meta["clean_test_error_pct"]),
    "final train loss": lambda meta: float(meta["history"][-1]["train_loss"]),  # figure 3's end point
}


def checkpoint_groups(directory: str | Path) -> tuple[list[Group], list[str]]:
    """Clean test error (%) and final training loss per model × dataset × activation × schedule
    over training seeds, from the checkpoints' metadata; unreadable checkpoints are named in the
    notes and left out. An adversarial run's ``-last`` twin is not a seed of its own: the run is
    counted once, by the epoch its checkpoint keeps (the best held-out robust accuracy)."""
    groups: dict[tuple, Group] = {}
    notes = []
    for pt in checkpoint_files(directory):
        if pt.stem.endswith("-last") and pt.with_name(pt.stem[: -len("-last")] + ".pt").is_file():
            continue
        try:
            meta = read_meta(pt)
            cfg, args = meta["train_config"], meta["model_args"]
            seed = int(cfg["seed"])
            meta = meta | read_history(pt, meta)
            values = {metric: read(meta) for metric, read in CHECKPOINT_METRICS.items()}
        except (CheckpointError, KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError) as err:
            notes.append(f"{pt.name}: left out ({type(err).__name__}: {err})")
            continue
        for metric, value in values.items():
            key = (args["name"], meta["dataset"], args["act"], metric, _schedule(cfg))
            group = groups.setdefault(key, Group(*key))
            if seed in group.values:
                notes.append(f"{pt.name}: a second checkpoint for seed {seed} of {'/'.join(key[:4])}; kept the first")
                continue
            group.values[seed] = value
    return list(groups.values()), notes


def attack_groups(directory: str | Path, on_error: OnError | None = warn_skipped) -> tuple[list[Group], list[str]]:
    """Mean successes (and, for the standard evaluation, robust accuracy; over repeats) per model ×
    dataset × activation × attack setting over training seeds, from complete results; the attack options and image count must match. A
    malformed file goes to ``on_error`` (a warning) and is left out; ``on_error=None`` raises."""
    groups: dict[tuple, Group] = {}
    notes = []
    for path, res in list_results(directory, on_error):
        scheme, seed = seed_split(checkpoint_tag(res))
        if res["status"] != "complete" or seed is None:
            why = "unfinished" if seed is not None else "no training seed in its checkpoint name"
            notes.append(f"{path.name}: left out ({why})")
            continue
        run = res.get("run", {})
        schedule = f"{run.get('images')} images, " + json.dumps(run.get("options", {}), sort_keys=True)
        if scheme:  # e.g. pgd0.1k10: adversarially trained seeds are never a standard model's
            schedule = f"{scheme} checkpoints, {schedule}"
        for setting in res["settings"]:
            label = setting["label"]
            values: dict[str, float] = {}
            if label.startswith("min-"):  # a minimal-norm attack (FMN): every image is "fooled" at some distance
                value = median_distance(setting, label.removeprefix("min-"))
                if value is None:
                    notes.append(f"{path.name}: {label} fooled under half the images; no median distance")
                    continue
                values[f"{res['attack']} {label} median distance"] = value
            else:
                successes = [r["successes"] for r in setting["repeats"]]
                values[f"{res['attack']} {label} successes"] = float(mean_std(successes)[0])
                robust = robust_accuracy(res, setting)
                if robust is not None:
                    values[f"{res['attack']} {label} {ROBUST}"] = robust
                z = [r.get("avg_abs_z") for r in setting["repeats"]]
                if all(isinstance(v, int | float) for v in z):  # the paper's second metric (none: nothing fooled)
                    values[f"{res['attack']} {label} avg|Z|"] = float(mean_std(z)[0])
            for metric, value in values.items():
                key = (res["model"], res["dataset"], res["act"], metric, schedule)
                group = groups.setdefault(key, Group(key[0], key[1], key[2], key[3], key[4]))
                if seed in group.values:
                    notes.append(f"{path.name}: seed {seed} of {'/'.join(key[:4])} already given by another file; "
                                 "kept the first")
                    continue
                group.values[seed] = value
    return list(groups.values()), notes


ROBUST = "robust accuracy %"


def higher_is_better(metric: str) -> bool:
    """Robust accuracy is better high; error, loss, successes and distances are compared low."""
    return metric.endswith(ROBUST)


def _best(groups: Sequence[Group]) -> Group:
    sign = -1.0 if higher_is_better(groups[0].metric) else 1.0
    return min(groups, key=lambda g: sign * g.stats()[0])


def robust_accuracy(res: dict[str, Any], setting: dict[str, Any]) -> float | None:
    """The standard evaluation's robust accuracy on the test set, in %, mean over repeats: the
    checkpoint's clean accuracy times the share of attacked (correctly classified) images left
    unfooled; the number of the report's headline table. Only for a ``headline`` attack (robench's
    AutoAttack-grade evaluation) whose result stores the clean accuracy: a weaker attack's robust
    accuracy is an upper bound that would read as a finding."""
    clean = res.get("checkpoint", {}).get("clean_test_accuracy")
    if not get_attack(res["attack"]).headline or not isinstance(clean, int | float):
        return None
    per_repeat = [robust_test_accuracy(clean, len(r["images"]) - r["successes"], len(r["images"]))
                  for r in setting["repeats"]]
    values = [v for v in per_repeat if v is not None]
    return 100 * float(mean_std(values)[0]) if values else None


def best_baseline(groups: Sequence[Group]) -> Group | None:
    """The lowest mean among activations outside the S-APL family (lower is better for error,
    loss and successes): the paper's "best baseline". Only groups with the most seeds compete, so a
    lone single-seed run (an ablation, say) cannot become the reference and void every test."""
    base = [g for g in groups if not g.act.startswith(SAPL_FAMILY) and g.values]
    if not base:
        return None
    most = max(len(g.values) for g in base)
    return _best([g for g in base if len(g.values) == most])


def best_of(acts: Sequence[str]) -> Callable[[Sequence[Group]], Group | None]:
    """The best mean (lowest; highest for robust accuracy) among ``acts``, those with the most seeds
    competing, per metric: "the best smooth activation" of issue 26 is
    ``best_of(["silu", "gelu", "psoftplus", "pssilu"])``. Chosen per metric, so the reference of one
    row can differ from another's; the ``vs`` column names it."""
    wanted = set(acts)

    def pick(groups: Sequence[Group]) -> Group | None:
        named = [g for g in groups if g.act in wanted and g.values]
        if not named:
            return None
        most = max(len(g.values) for g in named)
        return _best([g for g in named if len(g.values) == most])

    return pick


BEST_OF = "best-of:"  # --against best-of:silu,gelu,...


def reference_rule(against: str) -> tuple[str | Callable[[Sequence[Group]], Group | None], str]:
    """``against`` as given to ``robench stats``: an activation, or ``best-of:a,b,...``; with the rule's words."""
    if not against.startswith(BEST_OF):
        return against, f"each activation vs {against}"
    acts = [a.strip() for a in against.removeprefix(BEST_OF).split(",") if a.strip()]
    if not acts:
        raise ValueError(f"--against {against!r} names no activation (e.g. best-of:silu,gelu)")
    return best_of(acts), (f"each activation vs the best mean among {', '.join(acts)} (per metric, most seeds; "
                           "lowest, highest for robust accuracy)")


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values of one family (every activation against one
    reference on one metric): a study of eight activations makes seven comparisons per metric, and
    one of them reaches p < 0.05 by chance more often than one in twenty. Untested rows stay None."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))  # monotone: never below an earlier one
        out[i] = running
    return out


def compare(groups: Sequence[Group], against: str | Callable[[Sequence[Group]], Group | None]) -> list[Comparison]:
    """Each group against the reference of its family: the activation named ``against``, or the
    group a rule picks (e.g. :func:`best_baseline`). Families without a reference get no test."""
    families: dict[tuple, list[Group]] = {}
    for g in groups:
        families.setdefault(g.family, []).append(g)
    rows = []
    for fam in sorted(families):
        members = sorted(families[fam], key=lambda g: (g.act != "relu", g.act))
        if callable(against):
            ref = against(members)
        else:
            ref = next((g for g in members if g.act == against), None)
        ref_mean = ref.stats()[0] if ref is not None else None
        for g in members:
            mean, std = g.stats()
            row = Comparison(g, mean, std, is_reference=g is ref)
            if ref is not None and g is not ref:
                row.reference = ref.act
                row.diff = None if mean is None or ref_mean is None else mean - ref_mean
                row.t, row.p = welch(list(g.values.values()), list(ref.values.values()))
                row.ci95, row.d = effect(list(g.values.values()), list(ref.values.values()))
            rows.append(row)
        family_rows = rows[len(rows) - len(members):]
        for row, adjusted in zip(family_rows, holm([r.p for r in family_rows]), strict=True):
            row.p_holm = adjusted
    return rows


def build_stats(
    checkpoints: str | Path | None, results: str | Path | None, against: str = "relu",
    on_error: OnError | None = warn_skipped
) -> tuple[list[StatsTable], list[str]]:
    """Clean error vs the best baseline (Tables 1 and 7) and attack successes vs ``against``; a
    malformed result goes to ``on_error`` (a warning) and is left out, ``on_error=None`` raises."""
    tables, notes = [], []
    if checkpoints is not None:
        if not Path(checkpoints).is_dir():
            raise CheckpointError(f"checkpoint folder {checkpoints} not found")
        groups, n = checkpoint_groups(checkpoints)
        notes += n
        if groups:
            tables.append(StatsTable("Clean test error (%) and final training loss across training seeds "
                                     "(Tables 1 and 7, figure 3)",
                                     "each activation vs the best baseline: lowest mean outside the S-APL family, "
                                     "among the groups with most seeds",
                                     compare(groups, best_baseline)))
    if results is not None:
        if not Path(results).is_dir():
            raise ResultError(f"results folder {results} not found")
        groups, n = attack_groups(results, on_error)
        notes += n
        if groups:
            rule, words = reference_rule(against)
            tables.append(StatsTable("Attack successes across training seeds (mean over repeats per seed)",
                                     words, compare(groups, rule)))
    return tables, notes


HOLM_NOTE = "p Holm: adjusted (Holm) for the comparisons of its metric and schedule."


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _p_text(p: float | None) -> str:
    return "-" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


HEAD = ["model", "data", "metric", "schedule", "act", "seeds", "per seed", "mean ± std", "vs", "diff", "95 % CI", "d",
        "t", "p", "p Holm"]


def row_texts(row: Comparison) -> list[str]:
    g = row.group
    digits = (2 if g.metric.startswith("clean") else 4 if "loss" in g.metric or "distance" in g.metric
              else 3 if g.metric.endswith("avg|Z|") else 1)
    per_seed = ", ".join(f"{g.values[s]:.{digits + 1}g}" if "distance" in g.metric
                         else f"{g.values[s]:.3f}" if g.metric.endswith("avg|Z|")
                         else f"{g.values[s]:.1f}" if higher_is_better(g.metric) else f"{g.values[s]:g}"
                         for s in sorted(g.values))
    ci = "-" if row.ci95 is None else f"[{_num(row.ci95[0], digits)}, {_num(row.ci95[1], digits)}]"
    return [g.model, g.dataset, g.metric, g.schedule, g.act, str(len(g.values)), per_seed,
            f"{_num(row.mean, digits)} ± {_num(row.std, digits)}", "(reference)" if row.is_reference else row.reference or "-",
            _num(row.diff, digits), ci, _num(row.d, 2), _num(row.t, 2), _p_text(row.p), _p_text(row.p_holm)]


def render_markdown(tables: Sequence[StatsTable], notes: Sequence[str]) -> str:
    out = []
    for t in tables:
        out += [f"### {t.title}", "", f"Welch's t-test, two-sided; {t.rule}. {HOLM_NOTE}", ""]
        out.append("| " + " | ".join(HEAD) + " |")
        out.append("|" + "---|" * len(HEAD))
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row_texts(r)) + " |" for r in t.rows]  # avg|Z|
        out.append("")
    out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def render_json(tables: Sequence[StatsTable], notes: Sequence[str]) -> str:
    return json.dumps({"tables": [asdict(t) for t in tables], "notes": list(notes)}, indent=1) + "\n"


def render_rich(tables: Sequence[StatsTable], notes: Sequence[str]) -> list[Any]:
    from rich.markup import escape
    from rich.table import Table as RichTable

    out: list[Any] = []
    for t in tables:
        table = RichTable(title=f"{t.title}\nWelch's t-test, two-sided; {t.rule}. {HOLM_NOTE}")
        for col in HEAD:
            table.add_column(col)
        for r in t.rows:
            table.add_row(*map(escape, row_texts(r)))
        out.append(table)
    out += [escape(n) for n in notes]
    return out
