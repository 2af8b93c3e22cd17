"""PNG figures from stored files only: activation shapes across epochs (paper figures 1-2),
training-loss curves (figure 3), FGSM success against epsilon, and success curves of PGD and FMN
(minimal norms) per activation across training seeds. Needs the ``plot`` extra."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ReadError, RobenchError
from .models import ModelArgs, build_model_from_args
from .results import OnError, list_results, warn_skipped
from .storage import read_json


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RobenchError("robench plot needs matplotlib: pip install 'robench[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sidecar(path: str | Path) -> dict[str, Any]:
    from .checkpoints import read_meta

    path = Path(path)
    side = path if path.suffix == ".json" else path.with_suffix(".json")
    if side.with_suffix(".pt").is_file() and side.is_file():
        meta = read_meta(side.with_suffix(".pt"))  # checks the sidecar still belongs to its weights
        return _with_history(side, meta)
    try:
        meta = read_json(side)
    except FileNotFoundError:
        raise CheckpointError(f"no sidecar {side} (plots read the JSON written beside each checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"sidecar {side} is corrupt JSON") from None
    except ReadError as err:  # a FIFO, a huge or absurdly nested file
        raise CheckpointError(f"sidecar {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{side} is not a robench checkpoint sidecar")
    return _with_history(side, meta)


def _with_history(side: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The sidecar with its training history in (read_history: inline or the file beside it)."""
    from .checkpoints import read_history

    meta = meta | read_history(side.with_suffix(".pt"), meta)
    if "history" not in meta or "model_args" not in meta:
        raise CheckpointError(f"{side} is not a robench checkpoint sidecar")
    return meta


def activation_curves(meta: dict[str, Any], grid: torch.Tensor, epochs: list[int]) -> dict[str, dict[int, torch.Tensor]]:
    """Per learnable layer, per epoch (0 = init): its curve on ``grid``, averaged over channels."""
    args = ModelArgs.from_dict(meta["model_args"])
    args = ModelArgs(**{**args.__dict__, "act_options": {**args.act_options, "compiled": False}}) \
        if args.act in ("apl",) or args.act.startswith("sapl") else args
    model = build_model_from_args(args)
    states = {0: meta["activations_init"]} | {h["epoch"]: h["activations"] for h in meta["history"]}
    curves: dict[str, dict[int, torch.Tensor]] = {}
    for epoch in epochs:
        if epoch not in states:
            continue
        for layer, params in states[epoch].items():
            module = model.get_submodule(layer)
            with torch.no_grad():
                for name, value in params.items():
                    getattr(module, name).copy_(torch.tensor(value))
            curves.setdefault(layer, {})[epoch] = module.curve(grid).mean(0)
    return curves


def plot_curves(checkpoint: str | Path, out: str | Path, epochs: list[int] | None = None) -> Path:
    """One panel per learnable activation layer, one line per epoch (figures 1-2)."""
    plt = _pyplot()
    meta = _sidecar(checkpoint)
    if not meta.get("activations_init"):
        raise CheckpointError(f"{checkpoint} has no learnable activations to draw ({meta['model_args']['act']})")
    last = meta["history"][-1]["epoch"]
    epochs = epochs or sorted({0, 1, max(1, last // 4), max(1, last // 2), last})
    grid = torch.linspace(-3, 3, 241)
    curves = activation_curves(meta, grid, epochs)
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.2), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (layer, by_epoch) in zip(axes[0], curves.items()):
        for i, (epoch, y) in enumerate(sorted(by_epoch.items())):
            ax.plot(grid, y, color=cmap(i / max(1, len(by_epoch) - 1)), label=f"epoch {epoch}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("x")
    axes[0][0].set_ylabel("h(x)" + (" (mean over channels)" if meta["model_args"]["act_options"].get("per_channel") else ""))
    axes[0][-1].legend(fontsize=7)
    args = meta["model_args"]
    fig.suptitle(f"{args['act']} in {args['name']} on {meta['dataset']}: shape during training")
    return _save(fig, plt, out)


def plot_losses(checkpoints: list[str | Path], out: str | Path) -> Path:
    """Training loss per epoch of several checkpoints (figure 3)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for ck in checkpoints:
        meta = _sidecar(ck)
        xs = [h["epoch"] for h in meta["history"]]
        ax.plot(xs, [h["train_loss"] for h in meta["history"]], marker=".", label=Path(ck).stem)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    return _save(fig, plt, out)


def plot_eps(results_dir: str | Path, model: str, out: str | Path,
             on_error: OnError | None = warn_skipped) -> Path:
    """FGSM successes against epsilon, one line per activation of ``model`` (mean ± std); a
    malformed result goes to ``on_error`` (a warning) and is left out; ``on_error=None`` raises."""
    from .tables import build_report

    plt = _pyplot()
    table = next((t for t in build_report(results_dir, on_error).tables if t.key == "table3_fgsm"), None)
    rows = [r for r in (table.rows if table else []) if r.model == model]
    if not rows:
        raise RobenchError(f"no finished FGSM results for {model} in {results_dir}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        labels = [c for c in table.columns if c in r.cells]
        eps = [float(c.split("=")[1]) for c in labels]
        ax.errorbar(eps, [r.cells[c].mean for c in labels], yerr=[r.cells[c].std for c in labels], marker="o",
                    capsize=3, label=f"{r.act} ({r.tag})")
    ax.set_xlabel("epsilon (Linf)")
    ax.set_ylabel("successes")
    ax.set_title(f"FGSM on {model}")
    ax.legend(fontsize=7)
    return _save(fig, plt, out)


def minimal_norm(spec: Any) -> bool:
    """Whether an attack (its spec) searches the smallest adversarial distance, with no budget (FMN)."""
    return spec.threat(spec.config_cls())[1] is None


def draws_curves(spec: Any) -> bool:
    """Whether ``plot_curve`` draws an attack: a minimal-norm one, or an iterative one whose
    successes grow with its budget (the spec's ``monotone``)."""
    return spec.monotone or minimal_norm(spec)


def success_curves(results_dir: str | Path, attack: str, norm: str, model: str,
                   on_error: OnError | None = warn_skipped
                   ) -> dict[str, list[tuple[str, list[float], list[float]]]]:
    """act -> [(checkpoint tag, budgets, success rate at each)] from finished ``attack`` results
    of ``norm`` on ``model``. An iterative attack's curve has its budgets (mean over repeats); a
    minimal-norm attack's is read off its minimal distances at every distance it stored, plus 0. A
    malformed result goes to ``on_error`` (a warning) and is left out; ``on_error=None`` raises."""
    from .attacks import get_attack
    from .attacks.metrics import aggregate
    from .robustness import DISTANCE_KEY, setting_threats
    from .tables import checkpoint_tag

    spec = get_attack(attack)
    if not draws_curves(spec):
        raise RobenchError(f"curves come from minimal-norm or iterative attacks, not {attack}")
    curves: dict[str, list[tuple[str, list[float], list[float]]]] = {}
    for _, res in list_results(results_dir, on_error):
        if (res["attack"], res["model"], res["status"]) != (attack, model, "complete"):
            continue
        settings = [(s, budget) for s, n, budget in setting_threats(res, spec) if n == norm]
        if not settings:
            continue
        if settings[0][1] is not None:
            points = sorted((budget, (s.get("aggregate") or aggregate(s["repeats"]))["success_rate_mean"])
                            for s, budget in settings)
        else:
            records = [r for rep in settings[0][0]["repeats"] for r in rep["images"]]
            found = sorted(r[DISTANCE_KEY[norm]] for r in records if r["success"])
            points = [(0.0, 0.0)] + [(d, (i + 1) / len(records)) for i, d in enumerate(found)]
        curves.setdefault(res["act"], []).append((checkpoint_tag(res), [p[0] for p in points], [p[1] for p in points]))
    if not curves:
        raise RobenchError(f"no finished {attack} {norm} results for {model} in {results_dir}")
    return curves


def plot_curve(results_dir: str | Path, attack: str, norm: str, model: str, out: str | Path,
               on_error: OnError | None = warn_skipped) -> Path:
    """Success rate against budget, one line per activation: the mean over training seeds, with a
    band from the lowest to the highest seed where there are several."""
    import numpy as np

    from .attacks import get_attack

    plt = _pyplot()
    curves = success_curves(results_dir, attack, norm, model, on_error)
    steps = minimal_norm(get_attack(attack))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for act, runs in sorted(curves.items()):
        top = max(max(b) for _, b, _ in runs)
        grid = np.linspace(0.0, top, 200) if steps else np.array(sorted({x for _, b, _ in runs for x in b}))
        # step functions for a minimal-norm attack (success holds from each distance on), straight
        # lines between an iterative attack's budgets
        ys = np.array([np.array(r)[np.searchsorted(b, grid, side="right") - 1] if steps else np.interp(grid, b, r)
                       for _, b, r in runs])
        (line,) = ax.plot(grid, ys.mean(0), marker=None if steps else "o",
                          label=f"{act} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(grid, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    unit = " (pixels)" if norm == "l0" else ""
    ax.set_xlabel(f"{norm} budget{unit}")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{attack.upper()} {norm} on {model}")
    ax.legend(fontsize=7)
    return _save(fig, plt, out)


def forest_panels(checkpoints: str | Path | None, results: str | Path | None, against: str = "relu",
                  metric: str | None = None, on_error: OnError | None = warn_skipped) -> list[ForestPanel]:
    """Per metric family (model, data, metric, schedule) with ``against`` in it: every other
    activation's difference to it with the Welch 95 % CI across training seeds, as ``robench
    stats`` computes them. ``metric`` keeps the families whose metric contains it."""
    from .stats import attack_groups, checkpoint_groups, compare, reference_rule

    groups = []
    if checkpoints is not None:
        groups += checkpoint_groups(checkpoints)[0]
    if results is not None:
        groups += attack_groups(results, on_error)[0]
    panels: dict[tuple, list[Any]] = {}
    seeds: dict[tuple, tuple[str, int]] = {}  # family -> its reference (best-of: one per family) and seed count
    for row in compare(groups, reference_rule(against)[0]):
        if row.is_reference:
            seeds[row.group.family] = (row.group.act, len(row.group.values))
        elif row.reference is not None and row.diff is not None and (metric is None or metric in row.group.metric):
            panels.setdefault(row.group.family, []).append(row)
    if not panels:
        raise RobenchError(f"no activation to compare with {against} across seeds"
                           + (f" in metric {metric!r}" if metric else "") + " (each needs the same model, data, "
                           "metric and schedule as a run of it)")
    return [ForestPanel(*family, *seeds[family], tuple(rows)) for family, rows in sorted(panels.items())]


@dataclass(frozen=True)
class ForestPanel:
    model: str
    dataset: str
    metric: str
    schedule: str
    reference: str
    reference_seeds: int
    rows: tuple[Any, ...]  # stats.Comparison, one per activation but the reference

    @property
    def title(self) -> str:
        return f"{self.model} {self.dataset}: {self.metric}"


def _grid(plt: Any, n: int, width: float, height: float, cols: int = 3) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, ``cols`` a row at most; the spare axes are hidden."""
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_forest(checkpoints: str | Path | None, results: str | Path | None, out: str | Path, against: str = "relu",
                metric: str | None = None, on_error: OnError | None = warn_skipped) -> Path:
    """A forest plot per metric: each activation's mean difference to ``against`` across seeds,
    with its Welch 95 % CI; a hollow point has no interval (one seed on a side, or no spread)."""
    plt = _pyplot()
    panels = forest_panels(checkpoints, results, against, metric, on_error)
    fig, axes = _grid(plt, len(panels), 4.2, 0.6 + 0.35 * max(len(p.rows) for p in panels))
    for ax, panel in zip(axes, panels):
        for y, row in enumerate(panel.rows):
            if row.ci95 is None:
                ax.plot([row.diff], [y], "o", mfc="none", color="C0")
            else:
                ax.errorbar([row.diff], [y], xerr=[[row.diff - row.ci95[0]], [row.ci95[1] - row.diff]], fmt="o",
                            color="C0", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(panel.rows)), [f"{r.group.act} (n={len(r.group.values)})" for r in panel.rows])
        ax.set_ylim(-0.7, len(panel.rows) - 0.3)
        # the schedule tells a defended model's panel from a standard one's; it is long, so it wraps
        ax.set_title(f"{panel.title}\n" + textwrap.fill(panel.schedule, 55), fontsize=7)
        ax.set_xlabel(f"difference to {panel.reference} (n={panel.reference_seeds}), Welch 95 % CI", fontsize=8)
    return _save(fig, plt, out)


@dataclass(frozen=True)
class TradeoffPoint:
    name: str  # the checkpoint
    act: str
    model: str  # model and data set: a panel of their own
    clean: float  # accuracy, a fraction
    robust: float  # robust accuracy on the test set, a fraction
    threat: str  # where the robust accuracy comes from


def tradeoff_points(checkpoints: str | Path | None = None, results: str | Path | None = None,
                    threat: str | None = None, on_error: OnError | None = warn_skipped) -> list[TradeoffPoint]:
    """Clean against robust accuracy, one point per checkpoint and threat. From ``checkpoints``: the
    robust accuracy an adversarially trained model's sidecar stores (its held-out training check);
    from ``results``: the worst case over every attack per threat (``robench.leaderboard``).
    ``threat`` keeps the threats whose label (``linf 0.1``, ``l0 3px``) contains it."""
    from .checkpoints import checkpoint_files, read_meta
    from .config import budget_text
    from .leaderboard import build_board, robust_accuracy

    points = []
    for pt in checkpoint_files(checkpoints) if checkpoints is not None else []:
        try:
            meta = read_meta(pt)
        except (CheckpointError, ReadError, ValueError):  # stats and models name an unreadable checkpoint
            continue
        adv, robust = meta.get("adversarial"), meta.get("robust_accuracy")
        if not isinstance(adv, dict) or not isinstance(robust, int | float):
            continue
        check = adv.get("check") or {}
        label = f"{adv.get('norm')} {budget_text(adv.get('eps', 0.0))}, {check.get('attack', '?')}-{check.get('steps', '?')} " \
                "(training check)"
        args = meta["model_args"]
        points.append(TradeoffPoint(pt.stem, args["act"], f"{args['name']} {meta['dataset']}",
                                    float(meta["clean_test_accuracy"]), float(robust), label))
    if results is not None:
        for row in build_board(results, on_error).rows:
            for point, cell in sorted(row.worst.items(), key=lambda kv: kv[0].sort_key()):
                value = robust_accuracy(cell, row.clean)
                if value is not None and row.clean is not None:
                    points.append(TradeoffPoint(row.name, row.act, f"{row.model} {row.dataset}", row.clean, value,
                                                point.label))
    points = [p for p in points if threat is None or threat in p.threat]
    if not points:
        raise RobenchError("no checkpoint with a robust accuracy" + (f" at {threat!r}" if threat else "")
                           + ": only adversarially trained checkpoints store one; pass --results for attacked ones")
    return points


def act_colours(acts: list[str]) -> dict[str, Any]:
    """One colour per activation, the same in every panel: ReLU first, then by name."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {act: cmap(i % 10) for i, act in enumerate(sorted(set(acts), key=lambda a: (a != "relu", a)))}


def plot_tradeoff(checkpoints: str | Path | None, results: str | Path | None, out: str | Path,
                  threat: str | None = None, on_error: OnError | None = warn_skipped) -> Path:
    """Clean against robust accuracy, one point per checkpoint coloured by activation, a panel per
    model, data set and threat."""
    plt = _pyplot()
    points = tradeoff_points(checkpoints, results, threat, on_error)
    colours = act_colours([p.act for p in points])
    panels = list(dict.fromkeys((p.model, p.threat) for p in points))
    fig, axes = _grid(plt, len(panels), 4.0, 3.6)
    for ax, (model, label) in zip(axes, panels):
        for act, colour in colours.items():
            mine = [p for p in points if (p.model, p.threat) == (model, label) and p.act == act]
            if mine:
                ax.scatter([100 * p.clean for p in mine], [100 * p.robust for p in mine], color=colour, label=act)
        ax.set_xlabel("clean accuracy %")
        ax.set_ylabel("robust accuracy %")
        ax.set_title(f"{model}: {label}", fontsize=9)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: it hid points
    fig.suptitle("Clean against robust accuracy, one point per checkpoint", fontsize=9)
    return _save(fig, plt, out)


@dataclass(frozen=True)
class Band:
    act: str
    schedule: str  # the checkpoint tag without its seed: "" for a standard one, e.g. "pgd0.1k10"
    budgets: tuple[float, ...]
    mean: tuple[float, ...]  # robust accuracy (a fraction) at each budget, mean over seeds
    low: tuple[float, ...]  # lowest seed
    high: tuple[float, ...]  # highest seed
    seeds: tuple[int | None, ...]

    @property
    def label(self) -> str:
        return f"{self.act}{' ' + self.schedule if self.schedule else ''} ({len(self.seeds)} seed{'s' * (len(self.seeds) > 1)})"


def eps_bands(results: str | Path, model: str, norm: str = "linf",
              on_error: OnError | None = warn_skipped) -> list[Band]:
    """Robust accuracy (worst case over every attack, ``robench.leaderboard``) against the ``norm``
    budget per activation and training schedule of ``model``: the mean over training seeds and the
    band from the lowest to the highest seed, at the budgets every seed has."""
    from .leaderboard import build_board, robust_accuracy
    from .stats import seed_split
    from .robustness import Threat

    groups: dict[tuple[str, str], list[Any]] = {}
    for row in build_board(results, on_error).rows:
        if row.model == model and row.clean is not None and any(t.norm == norm for t in row.worst):
            groups.setdefault((row.act, seed_split(row.tag)[0]), []).append(row)
    bands = []
    for (act, schedule), rows in sorted(groups.items(), key=lambda kv: (kv[0][0] != "relu", kv[0])):
        shared = sorted(set.intersection(*({t for t in r.worst if t.norm == norm} for r in rows)), key=Threat.sort_key)
        values = [[robust_accuracy(r.worst[t], r.clean) for r in rows] for t in shared]
        bands.append(Band(act, schedule, tuple(t.budget for t in shared), tuple(sum(v) / len(v) for v in values),
                          tuple(map(min, values)), tuple(map(max, values)), tuple(seed_split(r.tag)[1] for r in rows)))
    bands = [b for b in bands if b.budgets]
    if not bands:
        raise RobenchError(f"no finished {norm} results with a clean accuracy for {model} in {results}")
    return bands


def plot_eps_band(results: str | Path, model: str, out: str | Path, norm: str = "linf",
                  on_error: OnError | None = warn_skipped) -> Path:
    """Robust accuracy against the budget, one line per activation (mean over seeds) with a band
    from the lowest to the highest seed."""
    plt = _pyplot()
    bands = eps_bands(results, model, norm, on_error)
    colours = act_colours([b.act for b in bands])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for band in bands:
        style = ("-", "--", ":", "-.")[sorted({b.schedule for b in bands}).index(band.schedule) % 4]
        ax.plot(band.budgets, [100 * v for v in band.mean], style, marker="o", color=colours[band.act], label=band.label)
        if len(band.seeds) > 1:
            ax.fill_between(band.budgets, [100 * v for v in band.low], [100 * v for v in band.high],
                            color=colours[band.act], alpha=0.2)
    ax.set_xlabel(f"{norm} budget" + (" (pixels)" if norm == "l0" else ""))
    ax.set_ylabel("robust accuracy % (worst case)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Robust accuracy against the {norm} budget on {model}; band: lowest to highest seed", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, plt, out)


def _save(fig: Any, plt: Any, out: str | Path) -> Path:
    import io

    from .storage import atomic_write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
