"""Auto-PGD (Croce & Hein, ICML 2020), written in torch: Linf and L2, CE, DLR and targeted DLR.

PGD with a step size it tunes itself (SPEC §7). Over N iterations it looks back at checkpoints
w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). At a
checkpoint an image halves its step (which starts at 2 eps) when fewer than 75 % of the steps since
the last checkpoint raised its loss, or when neither its step nor its best loss changed since the
last one, and then restarts from its best point. Steps use momentum 0.75. Each image is a row of its
own: rows leave the batch when their image is misclassified (early stop), so the images that stand
keep the whole budget and the others cost nothing more.

``apgd_t`` attacks each image towards its n most likely wrong classes at once: one row per image
and target, all in one batch, and an image's rows leave together when any of them fools it. The
reference implementation runs the targets one after the other over the whole batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome, EvalMode, check_norm_budgets
from robench.attacks.spec import BUDGET_KWARGS, AttackSpec, builtin_attack, member_options, nondefault_parts, setting_label

MOMENTUM = 0.75
TRACE_POINTS = 11  # the best loss kept per robust image: at 0 %, 10 %, ..., 100 % of the steps


def ce_loss(logits: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def dlr_loss(logits: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): the margin, scaled so that it ignores the
    logits' scale (a model cannot hide behind a large one)."""
    ordered, _ = logits.sort(1, descending=True)
    true = logits.gather(1, labels[:, None])[:, 0]
    other = torch.where(ordered[:, 0] == true, ordered[:, 1], ordered[:, 0])
    return -(true - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    assert targets is not None  # apgd_t always passes them (an internal invariant, not user input)
    ordered, _ = logits.sort(1, descending=True)
    true = logits.gather(1, labels[:, None])[:, 0]
    target = logits.gather(1, targets[:, None])[:, 0]
    return -(true - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]
# loss name -> (per-row loss to maximise, fewest classes it is defined for)
LOSSES: dict[str, tuple[LossFn, int]] = {"ce": (ce_loss, 2), "dlr": (dlr_loss, 3), "dlr_targeted": (dlr_targeted_loss, 4)}


class TooFewClassesError(ValueError):
    """DLR needs 3 classes (z_pi3), targeted DLR 4 (z_pi4); a smaller model gets this, never a crash."""


@dataclass(frozen=True)
class APGDConfig:
    """APGD settings (SPEC §7): 100 iterations, one restart, CE loss; budgets as PGD's.

    epsilons are on the [0, 1] pixel scale, each its own setting. A restart after the first attacks
    only the images the earlier ones did not fool, from a fresh random start."""

    norm: str = "linf"  # linf or l2
    epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"  # ce or dlr
    max_batch: int = 1000  # most rows (image x target) in one forward+backward pass: bounds memory
    allowed_losses: ClassVar[tuple[str, ...]] = ("ce", "dlr")

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        check_norm_budgets(self.norm, self.epsilons, ("linf", "l2"), "apgd")
        if self.steps < 1 or self.restarts < 1 or self.max_batch < 1:
            raise ValueError("steps, restarts and max_batch must be >= 1")
        if self.loss not in self.allowed_losses:
            raise ValueError(f"{type(self).__name__} loss must be {' or '.join(self.allowed_losses)}, got {self.loss!r}")


@dataclass(frozen=True)
class APGDTConfig(APGDConfig):
    """APGD-T: targeted DLR towards each of the ``n_target_classes`` most likely wrong classes (9,
    as AutoAttack; fewer when the model has fewer wrong classes)."""

    loss: str = "dlr_targeted"
    n_target_classes: int = 9
    allowed_losses: ClassVar[tuple[str, ...]] = ("dlr_targeted",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_target_classes < 1:
            raise ValueError(f"n_target_classes must be >= 1, got {self.n_target_classes}")


def checkpoints(steps: int) -> list[int]:
    """The iterations (0-based) after which the step size is reviewed: the first after
    max(int(0.22 N), 1) steps, each later gap max(int(0.03 N), 1) shorter, but at least
    max(int(0.06 N), 1) (the reference code's rounding of SPEC §7's p_j)."""
    gap, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at = [], gap - 1
    while at < steps:
        out.append(at)
        gap = max(gap - shrink, least)
        at += gap
    return out


@dataclass
class APGDRun:
    """What one APGD run found, per row. adversarial: (R, C, H, W) the first misclassified iterate
    where one was found, else the clean image; fooled (R,) bool; trace (R, steps + 1) the best loss
    after each step (from its last restart); queries (R,) forward+backward passes."""

    adversarial: Tensor
    fooled: Tensor
    trace: Tensor
    queries: Tensor


def _norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def _unit(t: Tensor, norm: str) -> Tensor:
    """``t`` scaled to unit Linf (for the random start) or unit L2 norm, per row."""
    if norm == "linf":
        return t / (t.flatten(1).abs().amax(1).view(-1, *[1] * (t.dim() - 1)) + 1e-12)
    return t / (_norm(t) + 1e-12)


def _project(clean: Tensor, adv: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return torch.minimum(torch.maximum(adv, clean - eps), clean + eps).clamp(0, 1)
    delta = adv - clean
    return (clean + _unit(delta, "l2") * torch.clamp(_norm(delta), max=eps)).clamp(0, 1)


def _loss_and_grad(model: nn.Module, x: Tensor, y: Tensor, t: Tensor | None, loss_fn: LossFn,
                   chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row loss (R,), its gradient w.r.t. ``x`` (R, C, H, W) and whether the row is still
    classified right (R,), in chunks of ``chunk`` rows."""
    losses, grads, right = [], [], []
    for s in range(0, len(x), chunk):
        xi = x[s : s + chunk].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xi).float()
            loss = loss_fn(logits, y[s : s + chunk], None if t is None else t[s : s + chunk])
            grads.append(torch.autograd.grad(loss.sum(), xi)[0].detach())
        losses.append(loss.detach())
        right.append(logits.detach().argmax(1) == y[s : s + chunk])
    return torch.cat(losses), torch.cat(grads), torch.cat(right)


def apgd_rows(model: nn.Module, clean: Tensor, labels: Tensor, eps: float, norm: str, steps: int, loss: str,
              generator: torch.Generator, groups: Tensor | None = None, targets: Tensor | None = None,
              chunk: int = 1000) -> APGDRun:
    """One APGD run from a random start on rows ``clean`` (R, C, H, W) in [0, 1] with ``labels`` (R,).

    ``groups`` (R,) says which rows attack the same image (default: each its own): when one row is
    misclassified, every row of its group stops. ``targets`` (R,) are the target classes of a
    targeted loss. The model is used as given (the caller puts it in eval mode).
    """
    loss_fn = LOSSES[loss][0]
    r = len(clean)
    device = clean.device
    groups = torch.arange(r, device=device) if groups is None else groups
    start = 2 * torch.rand(clean.shape, generator=generator, device=generator.device).to(device) - 1 \
        if norm == "linf" else torch.randn(clean.shape, generator=generator, device=generator.device).to(device)
    x_adv = (clean + eps * _unit(start, norm)).clamp(0, 1)
    out = APGDRun(clean.clone(), torch.zeros(r, dtype=torch.bool, device=device),
                  torch.zeros(r, steps + 1, device=device), torch.ones(r, dtype=torch.int64, device=device))
    loss_now, grad, right = _loss_and_grad(model, x_adv, labels, targets, loss_fn, chunk)
    # Per-row state, compacted as rows leave; `row` maps it back to the caller's rows.
    s = {"row": torch.arange(r, device=device), "clean": clean, "y": labels, "g": groups, "x": x_adv, "x_old": x_adv,
         "x_best": x_adv, "grad": grad, "grad_best": grad, "best": loss_now, "best_at_check": loss_now,
         "step": torch.full((r, *[1] * (clean.dim() - 1)), 2.0 * eps, device=device),
         "reduced": torch.ones(r, dtype=torch.bool, device=device), "history": torch.zeros(r, steps, device=device)}
    if targets is not None:
        s["t"] = targets
    out.trace[:, 0] = loss_now
    s = _leave(s, out, ~right, x_adv)
    reviews = set(checkpoints(steps))
    since = checkpoints(steps)[0] + 1  # steps in the current stretch between checkpoints
    for i in range(steps):
        if len(s["row"]) == 0:
            break
        momentum = MOMENTUM if i > 0 else 1.0
        x, x_old = s["x"], s["x_old"]
        direction = s["grad"].sign() if norm == "linf" else _unit(s["grad"], "l2")
        z = _project(s["clean"], x + s["step"] * direction, eps, norm)
        x_new = _project(s["clean"], x + (z - x) * momentum + (x - x_old) * (1 - momentum), eps, norm)
        loss_now, grad, right = _loss_and_grad(model, x_new, s["y"], s.get("t"), loss_fn, chunk)
        out.queries[s["row"]] += 1
        s["x_old"], s["x"], s["grad"] = x, x_new, grad
        s["history"][:, i] = loss_now
        better = loss_now > s["best"]
        s["x_best"] = torch.where(better.view(-1, *[1] * (clean.dim() - 1)), x_new, s["x_best"])
        s["grad_best"] = torch.where(better.view(-1, *[1] * (clean.dim() - 1)), grad, s["grad_best"])
        s["best"] = torch.maximum(s["best"], loss_now)
        out.trace[s["row"], i + 1:] = s["best"][:, None]
        if i in reviews:
            s, since = _review(s, i, since, steps)
        s = _leave(s, out, ~right, x_new)
    return out


def _leave(s: dict[str, Tensor], out: APGDRun, fooled: Tensor, x: Tensor) -> dict[str, Tensor]:
    """Record the rows misclassified at ``x`` and drop every row of their groups from the state."""
    if not fooled.any():
        return s
    hit = s["row"][fooled]
    out.adversarial[hit], out.fooled[hit] = x[fooled], True
    done = torch.isin(s["g"], s["g"][fooled])
    return {k: v[~done] for k, v in s.items()}


def _review(s: dict[str, Tensor], i: int, since: int, steps: int) -> tuple[dict[str, Tensor], int]:
    """A checkpoint: halve the step of the rows that stalled and send them back to their best point.

    A row stalls when its loss rose in at most 75 % of the ``since`` steps of this stretch (counted as
    the reference code does, which at the first checkpoint compares step 0 with the unwritten last
    slot), or when its step was not reduced last time and its best loss has not improved since."""
    h = s["history"]
    rises = sum((h[:, i - c] > h[:, (i - c - 1) % steps]).float() for c in range(since))
    stalled = (rises <= since * 0.75) | (~s["reduced"] & (s["best_at_check"] >= s["best"]))
    s["reduced"], s["best_at_check"] = stalled, s["best"].clone()
    back = stalled.view(-1, *[1] * (s["x"].dim() - 1))
    s["step"] = torch.where(back, s["step"] / 2, s["step"])
    s["x"] = torch.where(back, s["x_best"], s["x"])
    s["grad"] = torch.where(back, s["grad_best"], s["grad"])
    return s, max(since - max(int(0.03 * steps), 1), max(int(0.06 * steps), 1))


def apgd_images(model: nn.Module, images: Tensor, labels: Tensor, config: APGDConfig,
                generator: torch.Generator, eps: float | None = None) -> tuple[AttackOutcome, APGDRun]:
    """APGD on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,), restarts included, at
    ``eps`` (default ``config.epsilons[0]``; ``math.inf`` attacks without a budget).

    Returns the outcome (the misclassified iterate where one was found, else the clean image;
    details: ``found`` per image, and ``loss_trace`` for the images left standing) and the per-image
    run (targeted: the image's target row of highest final loss). Memory: about six image-sized
    tensors per row (image x target) for the whole batch; ``max_batch`` bounds only the rows in one
    forward+backward pass."""
    eps = config.epsilons[0] if eps is None else eps
    device = images.device
    labels = labels.to(device)
    n = len(images)
    with EvalMode(model):
        logits = torch.cat([model(images[i : i + config.max_batch]).detach().float()
                            for i in range(0, n, config.max_batch)]) if n else torch.zeros(0, 0, device=device)
    classes = logits.shape[1] if n else 0
    if n and classes < LOSSES[config.loss][1]:
        raise TooFewClassesError(f"the {config.loss} loss needs at least {LOSSES[config.loss][1]} classes; "
                                 f"this model has {classes} (use the ce loss)")
    k = min(getattr(config, "n_target_classes", 1), max(classes - 1, 1))
    targeted = isinstance(config, APGDTConfig)
    total = APGDRun(images.clone(), torch.zeros(n, dtype=torch.bool, device=device),
                    torch.zeros(n, config.steps + 1, device=device), torch.zeros(n, dtype=torch.int64, device=device))
    bound = eps if math.isfinite(eps) else (1.0 if config.norm == "linf" else math.sqrt(images[0].numel()))
    with EvalMode(model):
        for _ in range(config.restarts):
            standing = (~total.fooled).nonzero().flatten()
            if len(standing) == 0:
                break
            rows = standing.repeat_interleave(k)  # image-major: image i's targets side by side
            ranks = torch.arange(k, device=device).repeat(len(standing))
            targets = logits[rows].argsort(1, descending=True).gather(1, (ranks + 1)[:, None])[:, 0] if targeted else None
            run = apgd_rows(model, images[rows], labels[rows], bound, config.norm, config.steps, config.loss, generator,
                            groups=rows, targets=targets, chunk=config.max_batch)
            total.queries.index_add_(0, rows, run.queries)
            final = run.trace[:, -1].view(len(standing), k)
            pick = torch.arange(len(standing), device=device) * k + final.argmax(1)
            total.trace[standing] = run.trace[pick]
            hit = run.fooled.view(len(standing), k)
            first = hit.float().argmax(1)  # the first target row that fooled the image
            won = hit.any(1)
            total.adversarial[standing[won]] = run.adversarial.view(len(standing), k, *images.shape[1:])[won, first[won]]
            total.fooled[standing[won]] = True
    marks = torch.linspace(0, config.steps, TRACE_POINTS).round().long()
    trace = [None if f else [round(v, 4) for v in t.tolist()]
             for f, t in zip(total.fooled.tolist(), total.trace[:, marks].cpu())]
    outcome = AttackOutcome(total.adversarial, total.queries,
                            details={"found": total.fooled.tolist(), "loss_trace": trace})
    return outcome, total


def apgd_attack(model: nn.Module, images: Tensor, labels: Tensor, config: APGDConfig,
                generator: torch.Generator) -> AttackOutcome:
    """APGD (CE or DLR loss; APGDTConfig: targeted DLR over the top classes) at
    ``config.epsilons[0]``. All randomness comes from ``generator``."""
    return apgd_images(model, images, labels, config, generator)[0]


def _parts(c: APGDConfig) -> list[str]:
    """``linf``, ``l2-lossdlr``: the norm and every option set apart from its default (batch size aside)."""
    return [c.norm, *nondefault_parts(c, {"norm", "epsilons", "max_batch"})]


def _spec(name: str, config_cls: type[APGDConfig], **facts: Any) -> AttackSpec:
    """APGD and APGD-T: one norm and a grid of budgets, each its own setting, as PGD."""
    return AttackSpec(
        name, config_cls, apgd_attack,
        settings=lambda c: [(setting_label(c.norm, e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {BUDGET_KWARGS[c.norm]: c.epsilons[0]},
        deterministic=False,  # random start
        threat=lambda c: (c.norm, c.epsilons[0]),
        white_box=True,
        tag=lambda c: "-" + "-".join(_parts(c)),
        variant=lambda c: "-".join(_parts(c)),
        threats=("linf", "l2"),
        at_budget=lambda norm, b, o: config_cls(norm=norm, epsilons=(b,), **member_options(o, {"norm", "epsilons"}, name)),
        monotone=True,
        shorthand="eps",
        # The strongest single gradient attacks for Linf and L2 beside PGD and FMN/CW: on the parity
        # checkpoints APGD matches the reference AutoAttack's (docs/standard_evaluation.md).
        strongest=("linf", "l2"),
        **facts,
    )


# APGD joins the default Linf and L2 ensembles right after PGD (the same 100 gradient steps, with a step
# size it tunes and a restart from its best point); APGD-T runs 9 targets per image, so it is left to
# the standard evaluation and explicit member lists.
builtin_attack(_spec("apgd", APGDConfig, title="APGD {variant}, successes", order=42,
                     default_in=("linf", "l2"), cost=25, quick={"steps": 5}))
builtin_attack(_spec("apgd_t", APGDTConfig, title="APGD-T (targeted DLR) {variant}, successes", order=44,
                     quick={"steps": 5, "n_target_classes": 2}))
