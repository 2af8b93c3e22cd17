"""Gradient attacks through Foolbox 3: FGSM (paper Table 3), Carlini-Wagner L2 (Table 4), PGD
(Madry et al. 2018) and FMN (fast minimum-norm, Pintor et al. 2021).

Foolbox does the attacking; this module only adapts it to robench's attack signature
``(model, images, labels, config, generator) -> AttackOutcome``: it wraps the model with bounds
(0, 1) and no preprocessing (normalisation lives inside the model), keeps the model in eval mode
for the attack, makes Foolbox's global-RNG draws reproducible from ``generator``, and hands back
Foolbox's *clipped* images. Foolbox's own ``success`` flag is ignored on purpose: it counts images
the model already misclassifies; ``robench.attacks.base.judge`` decides success for every attack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import eagerpy as ep
import foolbox
import torch
from foolbox.attacks.fast_minimum_norm import best_other_classes
from foolbox.devutils import atleast_kd, flatten
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome, EvalMode, check_norm_budgets, perturbation_norms
from robench.attacks.spec import (BUDGET_KWARGS, AttackSpec, PaperTable, builtin_attack, member_options, nondefault_parts,
                                  setting_label)

NORMS = ("linf", "l2", "l1", "l0")  # l0 counts changed pixels (any channel), as judge() does


@dataclass(frozen=True)
class FGSMConfig:
    """FGSM settings; the epsilons are the paper's Table 3 columns (Linf, on [0, 1] pixels)."""

    epsilons: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08)
    random_start: bool = False  # Foolbox's LinfFastGradientAttack(random_start=...): uniform start in the eps-box
    # Most images in one Foolbox call: bounds the input batch, its gradient and the model's activations.
    max_batch: int = 1000

    def __post_init__(self) -> None:
        # A list from YAML would make the frozen config unhashable and differ from the default's type.
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        if not self.epsilons:
            raise ValueError("epsilons must name at least one Linf budget")
        bad = [e for e in self.epsilons if not 0 < e <= 1]
        if bad:
            raise ValueError(f"every epsilon must be in (0, 1] (pixels live in [0, 1]), got {bad}")
        if len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError(f"epsilons must be distinct (one outcome per epsilon), got {list(self.epsilons)}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


@dataclass(frozen=True)
class CWConfig:
    """Carlini-Wagner L2 settings: Foolbox's defaults except ``steps``, plus the L2 budget.

    l2_budget: the paper gives none. Foolbox's CW *minimises* the perturbation, so a budget is what
    turns its output into a yes/no: an image counts only if CW's adversarial lies within it. 0.5 is
    the L2 radius of RobustBench's CIFAR-10 L2 leaderboard and most CIFAR L2 papers (about 0.009 per
    pixel-channel rms on 3x32x32, invisible), so the numbers read against that literature. On the
    shipped undefended ReLU LeNet5 the minimal CW distances of foolbox's CIFAR samples have median
    about 0.19 and 16 of 17 are below 0.5: at this budget CW fools nearly every undefended image, and an
    activation's gain shows as images it pushes beyond 0.5. judge() stores each proposal's L2, so counts
    at any smaller budget can be read off one run without rerunning.

    steps: Foolbox's default, 10000 per binary-search step (x 9), took over 280 s for 17 LeNet images on
    2 CPU cores without finishing. 1000 keeps every other default (9 binary-search steps, stepsize 0.01,
    confidence 0, initial_const 1e-3, abort_early) and ran 102 LeNet images (the 17 foolbox samples it
    gets right, x 6) in 44 s on 2 idle cores (2709 passes; ~8 min while the cores were shared). 100 and
    200 steps gave the same successes and minimal norms within 0.002 there, so 1000 is margin, not need:
    with stepsize 0.01 Adam moves a tanh-space coordinate up to ~0.01 per step, so even 100 steps reach
    far past a 0.5 L2 ball, and abort_early (checked every steps/10) ends most searches early.
    Worst case is binary_search_steps * steps = 9000 forward+backward passes of the batch.
    """

    l2_budget: float = 0.5
    binary_search_steps: int = 9
    steps: int = 1000
    stepsize: float = 0.01
    confidence: float = 0.0
    initial_const: float = 0.001
    abort_early: bool = True
    # Most images in one Foolbox call, to bound memory. Foolbox's abort_early looks at the loss summed over
    # the batch, so results depend (slightly) on how images are grouped: keep it fixed across a comparison.
    max_batch: int = 1000

    def __post_init__(self) -> None:
        if not self.l2_budget > 0:
            raise ValueError(f"l2_budget must be > 0, got {self.l2_budget}")
        if self.binary_search_steps < 1:
            raise ValueError(f"binary_search_steps must be >= 1, got {self.binary_search_steps}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.stepsize > 0:
            raise ValueError(f"stepsize must be > 0, got {self.stepsize}")
        if not self.confidence >= 0:
            raise ValueError(f"confidence must be >= 0, got {self.confidence}")
        if not self.initial_const > 0:
            raise ValueError(f"initial_const must be > 0, got {self.initial_const}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


@dataclass(frozen=True)
class PGDConfig:
    """PGD settings (SPEC §6): random start, 100 steps of 2.5 * eps / steps, restarts optional.

    epsilons are on the [0, 1] pixel scale; each is its own setting. Every restart after the first
    attacks only the images the earlier ones did not fool, from a fresh random start.
    """

    norm: str = "linf"  # linf or l2
    epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    steps: int = 100
    rel_stepsize: float | None = None  # step size over eps; None means 2.5 / steps (Madry et al.)
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"  # ce (Foolbox's, Madry et al.) or margin (best other logit minus the true one, as CW and DLR)
    max_batch: int = 1000  # most images in one Foolbox call (bounds the batch, its gradient, activations)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        check_norm_budgets(self.norm, self.epsilons, ("linf", "l2"), "pgd")
        if self.steps < 1 or self.restarts < 1 or self.max_batch < 1:
            raise ValueError("steps, restarts and max_batch must be >= 1")
        if self.rel_stepsize is not None and not self.rel_stepsize > 0:
            raise ValueError(f"rel_stepsize must be > 0, got {self.rel_stepsize}")
        if self.loss not in ("ce", "margin"):
            raise ValueError(f"pgd loss must be ce or margin, got {self.loss!r}")

    @property
    def stepsize(self) -> float:
        return self.rel_stepsize if self.rel_stepsize is not None else 2.5 / self.steps


@dataclass(frozen=True)
class FMNConfig:
    """FMN settings: Foolbox's defaults (100 steps, max step 1.0, gamma 0.05, 10 binary-search steps).
    FMN minimises the perturbation, so one run gives every image's smallest adversarial distance
    found (an upper bound on the true one) and with it the success count at every budget. L2 runs
    on a fixed copy of Foolbox's L2 FMN (``_L2FMN`` says why): on 30 images of the shipped ReLU
    LeNet-5 its median minimal L2 distance is 0.206 (mean 0.248), against CW's 0.211 (0.271) and
    Foolbox's unfixed 0.998; on a linear model it meets the analytic distance.

    epsilon: optional budget in the norm's unit (pixels for l0); an image counts only when its
    minimal adversarial lies within it. Without one every misclassified proposal counts, and the
    report reads successes at any budget off the stored distances.
    """

    norm: str = "l2"
    steps: int = 100
    max_stepsize: float = 1.0
    gamma: float = 0.05
    binary_search_steps: int = 10
    epsilon: float | None = None
    max_batch: int = 1000

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"fmn norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.steps < 1 or self.binary_search_steps < 1 or self.max_batch < 1:
            raise ValueError("steps, binary_search_steps and max_batch must be >= 1")
        if not self.max_stepsize > 0 or not 0 < self.gamma < 1:
            raise ValueError("max_stepsize must be > 0 and gamma in (0, 1)")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")


class _L2FMN(foolbox.attacks.L2FMNAttack):
    """Foolbox 3.3.4's L2 FMN with its projection fixed. Foolbox computes the factor as
    ``min(1, norms / norms)`` = 1 from the norms of the images rather than the perturbations, so
    it never projects: the attack walks until it first crosses the boundary and reports that point
    (on 30 images of the shipped ReLU LeNet-5 the median stayed at its first step, 0.998 for steps
    of 1.0, against CW's 0.211). This is the projection FMN's paper prescribes."""

    def project(self, x: Any, x0: Any, epsilon: Any) -> Any:
        norms = ep.maximum(flatten(x - x0).norms.l2(axis=-1), 1e-12)
        factor = ep.minimum(1, epsilon / norms)
        return x0 + (x - x0) * atleast_kd(factor, x.ndim)


def _margin_loss(model: Any, labels: Any) -> Callable[[Any], Any]:
    """Summed (best other logit - true logit): its gradient ignores how sure the model is, which
    helps where cross-entropy saturates (the idea behind CW's and APGD's DLR losses)."""

    def loss_fn(inputs: Any) -> Any:
        logits = model(inputs)
        rows = range(len(labels))
        true = logits[rows, labels]
        other = logits[rows, best_other_classes(logits, labels)]
        return (other - true).sum()

    return loss_fn


class _LinfPGDMargin(foolbox.attacks.LinfPGD):
    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        return _margin_loss(model, labels)


class _L2PGDMargin(foolbox.attacks.L2PGD):
    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        return _margin_loss(model, labels)


@dataclass(frozen=True)
class FoolboxRow:
    """One Foolbox-backed attack: its class per norm and how a config becomes constructor kwargs."""

    classes: dict[str, Any]  # norm (or "norm/loss") -> Foolbox attack class
    kwargs: Callable[[Any], dict[str, Any]]
    random: Callable[[Any], bool]  # whether the attack draws random numbers (seeded from the generator)

    def build(self, config: Any) -> Any:
        key = f"{config.norm}/{config.loss}" if getattr(config, "loss", "ce") != "ce" else config.norm
        return self.classes[key](**self.kwargs(config))


FOOLBOX_ROWS: dict[str, FoolboxRow] = {
    "pgd": FoolboxRow(
        {"linf": foolbox.attacks.LinfPGD, "l2": foolbox.attacks.L2PGD, "linf/margin": _LinfPGDMargin,
         "l2/margin": _L2PGDMargin},
        lambda c: {"steps": c.steps, "rel_stepsize": c.stepsize, "random_start": c.random_start},
        random=lambda c: c.random_start,
    ),
    "fmn": FoolboxRow(
        {"linf": foolbox.attacks.LInfFMNAttack, "l2": _L2FMN, "l1": foolbox.attacks.L1FMNAttack,
         "l0": foolbox.attacks.L0FMNAttack},
        lambda c: {"steps": c.steps, "max_stepsize": c.max_stepsize, "gamma": c.gamma,
                   "binary_search_steps": c.binary_search_steps},
        random=lambda c: False,
    ),
}


def pgd_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: PGDConfig, generator: torch.Generator
) -> AttackOutcome:
    """Foolbox's PGD at ``config.epsilons[0]`` on ``images`` (N, C, H, W) in [0, 1], ``labels`` (N,).

    Foolbox returns the iterate after the last step, projected into the eps-ball and [0, 1]; that is
    the proposal. With ``restarts`` > 1 each later restart attacks only the images still classified
    right and its proposal replaces theirs. queries (N,) counts forward+backward passes per image
    (steps per restart it took part in). ``generator`` seeds every random start.
    """
    labels = labels.to(images.device)
    eps = config.epsilons[0]
    attack = FOOLBOX_ROWS["pgd"].build(config)
    adv = images.clone()
    queries = torch.zeros(len(images), dtype=torch.int64, device=images.device)
    standing = torch.arange(len(images), device=images.device)
    for _ in range(config.restarts):
        if len(standing) == 0:
            break
        with _attack_mode(model, images.device) as fmodel, _seeded_global_rng(generator, images.device, config.random_start):
            for start in range(0, len(standing), config.max_batch):
                who = standing[start : start + config.max_batch]
                _, clipped, _ = attack(fmodel, images[who], labels[who], epsilons=eps)
                adv[who] = clipped.detach()
        queries[standing] += config.steps
        with torch.no_grad():
            fooled = _predict(model, adv[standing]) != labels[standing]
        standing = standing[~fooled]
    return AttackOutcome(adversarial=adv, queries=queries)


def fmn_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: FMNConfig, generator: torch.Generator
) -> AttackOutcome:
    """Foolbox's FMN for ``config.norm`` on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,).

    The proposal is FMN's minimal adversarial where it is misclassified (and within ``epsilon``,
    when one is set), else the clean image; judge() stores its distance in every norm, so the
    report derives the success curve and the median minimal distance from one run. queries (N,) is
    the number of forward+backward passes FMN ran on the image's batch (counted). FMN draws no
    random numbers; ``generator`` is taken for the common signature.
    """
    attack = FOOLBOX_ROWS["fmn"].build(config)
    out = _minimal_norm(model, images, labels, attack, None, config.norm, config.epsilon, config.max_batch)
    return _l2_restart(model, images, labels, config, out) if config.norm == "l2" else out


def _l2_restart(model: nn.Module, images: Tensor, labels: Tensor, config: FMNConfig, first: AttackOutcome) -> AttackOutcome:
    """FMN L2 again, from a starting point, on the images the first run left unfooled.

    The projected L2 FMN can stall before it ever crosses the boundary: where clipping to [0, 1]
    eats most of each step (MNIST, its pixels mostly at 0 or 1), the ball it projects onto grows
    slower than the steps shrink. On the seed-0 MNIST MLPs it fooled 0 of 30 swish and 20 of 30
    ReLU images, where Foolbox's unprojected FMN, which walks until it crosses, fooled all 30. So
    those images get that walk first, and from each crossing it finds (FMN's binary search puts it
    on the boundary) the projected FMN minimises again; an image keeps the smaller misclassified
    of the two. Images the first run fooled are untouched, so where it converges (every CIFAR-10
    LeNet-5 run but 6 images of one) nothing changes. queries adds both runs' passes.
    """
    labels = labels.to(images.device)
    with torch.no_grad():
        missed = (_predict(model, first.adversarial) == labels).nonzero().flatten()
    if len(missed) == 0:
        return first
    kwargs = FOOLBOX_ROWS["fmn"].kwargs(config)
    x, y = images[missed], labels[missed]
    walk = _minimal_norm(model, x, y, foolbox.attacks.L2FMNAttack(**kwargs), None, "l2", None, config.max_batch)
    with torch.no_grad():
        crossed = (_predict(model, walk.adversarial) != y).nonzero().flatten()
    best, queries = walk.adversarial, walk.queries.clone()
    if len(crossed):
        again = _minimal_norm(model, x[crossed], y[crossed], _L2FMN(**kwargs), None, "l2", None, config.max_batch,
                              starting_points=walk.adversarial[crossed])
        with torch.no_grad():
            better = (_predict(model, again.adversarial) != y[crossed]) & (
                perturbation_norms(x[crossed], again.adversarial)["l2"] < perturbation_norms(x[crossed], best[crossed])["l2"])
        best[crossed[better]] = again.adversarial[better]
        queries[crossed] += again.queries
    if config.epsilon is not None:  # as _minimal_norm does: beyond the budget is not a success
        far = perturbation_norms(x, best)["l2"] > config.epsilon
        best[far] = x[far]
    adv, total = first.adversarial.clone(), first.queries.clone()
    adv[missed], total[missed] = best, total[missed] + queries
    return AttackOutcome(adversarial=adv, queries=total)


def _minimal_norm(model: nn.Module, images: Tensor, labels: Tensor, attack: Any, call_eps: float | None, norm: str,
                  budget: float | None, max_batch: int, starting_points: Tensor | None = None) -> AttackOutcome:
    """Run a Foolbox minimisation attack (FMN, CW) and keep, per image, its smallest adversarial when
    it is misclassified and (with a ``budget``) within it in ``norm``; the clean image otherwise.

    The check matters: where the attack finds nothing Foolbox returns an all-zero image, and scaling
    that (or a minimal adversarial that is too far) down to the budget, as Foolbox's clipped output
    does, is not something the attack found. Within the budget Foolbox's clip is the identity.
    queries (N,) counts the forward+backward passes the attack ran on the image's batch (Foolbox
    reports none); ``call_eps`` is what Foolbox is called with (it only shapes the clipped output);
    ``starting_points`` (misclassified images like ``images``) are where FMN starts its search.
    """
    labels = labels.to(images.device)
    advs, queries = [], []
    counter = _GradientCounter(model)
    with _attack_mode(counter, images.device) as fmodel:
        for start in range(0, len(images), max_batch):
            x, y = images[start : start + max_batch], labels[start : start + max_batch]
            counter.calls = 0
            start_at = {} if starting_points is None else {
                "starting_points": ep.astensor(starting_points[start : start + max_batch])}
            raw, clipped, _ = attack(fmodel, x, y, epsilons=call_eps, **start_at)
            passes = counter.calls
            with torch.no_grad():
                keep = _predict(model, raw) != y
            if budget is not None:
                keep &= perturbation_norms(x, raw)[norm] <= budget
            advs.append(torch.where(keep.view(-1, *[1] * (x.dim() - 1)), clipped.detach(), x))
            queries.append(torch.full((len(x),), passes, dtype=torch.int64, device=images.device))
    no_queries = torch.zeros(0, dtype=torch.int64, device=images.device)
    return AttackOutcome(adversarial=_cat(advs, images), queries=_cat(queries, no_queries))


def _predict(model: nn.Module, images: Tensor) -> Tensor:
    with EvalMode(model):
        return model(images).argmax(1)


def fgsm_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: FGSMConfig, generator: torch.Generator
) -> dict[float, AttackOutcome]:
    """Foolbox's LinfFastGradientAttack on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,).

    One outcome per epsilon, keyed by it: ``clip(x + eps * sign(grad_x CE), 0, 1)``, or from a uniform
    start in the eps-box when ``random_start``. FGSM is one gradient, so ``queries`` is 1 per image
    (one forward+backward pass) for each epsilon's outcome; Foolbox recomputes that gradient per
    epsilon, so the run costs len(epsilons) passes. ``generator`` seeds the random start only.
    """
    labels = labels.to(images.device)
    advs: dict[float, list[Tensor]] = {eps: [] for eps in config.epsilons}
    attack = foolbox.attacks.LinfFastGradientAttack(random_start=config.random_start)
    seeded = _seeded_global_rng(generator, images.device, config.random_start)
    with _attack_mode(model, images.device) as fmodel, seeded:
        for start in range(0, len(images), config.max_batch):
            x, y = images[start : start + config.max_batch], labels[start : start + config.max_batch]
            _, clipped, _ = attack(fmodel, x, y, epsilons=list(config.epsilons))
            for eps, adv in zip(config.epsilons, clipped):
                advs[eps].append(adv.detach())
    queries = torch.ones(len(images), dtype=torch.int64, device=images.device)
    return {eps: AttackOutcome(adversarial=_cat(parts, images), queries=queries.clone()) for eps, parts in advs.items()}


def cw_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: CWConfig, generator: torch.Generator
) -> AttackOutcome:
    """Foolbox's L2CarliniWagnerAttack on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,).

    CW returns, per image, the smallest misclassified image it found. That is the proposal when it is
    misclassified and within ``l2_budget``; otherwise the clean image. The check matters: where CW
    finds nothing Foolbox returns an all-zero image, and scaling that (or a minimal adversarial that
    is too far) down to the budget, as Foolbox's clipped output does, is not something CW found.
    queries (N,) is the number of forward+backward passes CW ran on the image's batch (exact, counted;
    Foolbox reports none): at most binary_search_steps * steps, fewer with abort_early.
    CW draws no random numbers, so ``generator`` is unused; it is taken for the common signature.
    """
    attack = foolbox.attacks.L2CarliniWagnerAttack(
        binary_search_steps=config.binary_search_steps,
        steps=config.steps,
        stepsize=config.stepsize,
        confidence=config.confidence,
        initial_const=config.initial_const,
        abort_early=config.abort_early,
    )
    return _minimal_norm(model, images, labels, attack, config.l2_budget, "l2", config.l2_budget, config.max_batch)


class _GradientCounter(nn.Module):
    """Passes through to ``model``, counting the calls made with a gradient (the attack's own steps,
    not Foolbox's final is-adversarial check)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += int(x.requires_grad)
        return self.model(x)


@contextmanager
def _attack_mode(model: nn.Module, device: torch.device) -> Iterator[foolbox.PyTorchModel]:
    """The model as a Foolbox model on [0, 1], in eval mode for the attack, the caller's modes restored after.

    Foolbox's PyTorchModel moves the model to its device; refusing a mismatch keeps that from silently
    relocating the caller's model. Foolbox takes input gradients with ``loss.backward()``, which would
    also fill (and for CW, accumulate thousands of times into) the parameters' ``.grad``: parameters are
    frozen for the attack, which also spares computing weight gradients nobody reads.
    """
    where = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    if where and where != {device}:
        raise ValueError(f"model is on {sorted(map(str, where))} but the images are on {device}; move one of them")
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield foolbox.PyTorchModel(model, bounds=(0, 1), device=device)
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in grads:
            p.requires_grad_(requires_grad)


@contextmanager
def _seeded_global_rng(generator: torch.Generator, device: torch.device, enabled: bool) -> Iterator[None]:
    """Foolbox draws from torch's global RNG of ``device``; seed it from ``generator`` inside a fork, so
    a run reproduces bit for bit and the caller's global RNG state is left as it was."""
    if not enabled:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    cuda = device.type == "cuda"
    index = device.index if device.index is not None else torch.cuda.current_device() if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _cat(parts: list[Tensor], like: Tensor) -> Tensor:
    """torch.cat that also handles an empty batch (no Foolbox call, no parts)."""
    return torch.cat(parts) if parts else like.clone()


def _one(fn: Callable[..., dict[float, Any]]) -> Any:
    """An attack of several epsilons at once run as robench's one-setting function."""
    def run(model, images, labels, config, generator):  # type: ignore[no-untyped-def]
        return fn(model, images, labels, config, generator)[config.epsilons[0]]

    return run


# The gradient attacks as rows of one table: what the report, the ensembles and the option parser need
# to know of each. Default ensembles run cheap first: one gradient step before 100, then FMN (and CW
# for L2). The strongest per threat: PGD for Linf, FMN or CW for L2, FMN for L1 (bench/attack_strength.py).
for _spec in (
    AttackSpec(
        "fgsm", FGSMConfig, _one(fgsm_attack),
        settings=lambda c: [(f"eps={e:g}", dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {"linf_budget": c.epsilons[0]},
        deterministic=False,  # random_start makes it random; without it repeats are identical
        threat=lambda c: ("linf", c.epsilons[0]),
        white_box=True,
        threats=("linf",),
        at_budget=lambda norm, b, o: FGSMConfig(epsilons=(b,), **member_options(o, {"epsilons"}, "fgsm")),
        order=30,
        paper_table=PaperTable("table3_fgsm", "Table 3: FGSM, successes (avg|Z| at eps=0.04)", ("eps=0.04",)),
        default_in=("linf",), cost=10,
        single_step_of="pgd",
        shorthand="eps",
        quick={"epsilons": (0.02, 0.08)},
    ),
    AttackSpec(
        "pgd", PGDConfig, pgd_attack,
        settings=lambda c: [(setting_label(c.norm, e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {BUDGET_KWARGS[c.norm]: c.epsilons[0]},
        deterministic=False,  # random start
        threat=lambda c: (c.norm, c.epsilons[0]),
        white_box=True,
        tag=lambda c: "-" + "-".join([c.norm, *nondefault_parts(c, {"norm", "epsilons", "max_batch"})]),
        variant=lambda c: "-".join([c.norm, *nondefault_parts(c, {"norm", "epsilons", "max_batch"})]),
        threats=("linf", "l2"),
        at_budget=lambda norm, b, o: PGDConfig(norm=norm, epsilons=(b,), **member_options(o, {"norm", "epsilons"}, "pgd")),
        title="PGD {variant}, successes",
        order=40,
        default_in=("linf", "l2"), cost=20,
        strongest=("linf",),
        monotone=True,
        shorthand="eps",
        quick={"steps": 5},
    ),
    AttackSpec(
        "fmn", FMNConfig, fmn_attack,
        settings=lambda c: [(f"min-{c.norm}" if c.epsilon is None else setting_label(c.norm, c.epsilon), c)],
        budget=lambda c: {} if c.epsilon is None else {BUDGET_KWARGS[c.norm]: c.epsilon},
        deterministic=True,
        threat=lambda c: (c.norm, c.epsilon),
        white_box=True,
        tag=lambda c: "-" + "-".join([c.norm, *nondefault_parts(c, {"norm", "max_batch"})]),
        variant=lambda c: "-".join([c.norm, *nondefault_parts(c, {"norm", "epsilon", "max_batch"})]),
        threats=("linf", "l2", "l1", "l0"),
        at_budget=lambda norm, b, o: FMNConfig(norm=norm, epsilon=b, **member_options(o, {"norm", "epsilon"}, "fmn")),
        title="FMN {variant}: successes at each budget (from minimal distances) and median minimal distance",
        order=70,
        default_in=("linf", "l2", "l1"), cost=30,
        strongest=("l2", "l1"),
        shorthand="eps",
        flag_fields={"eps": "epsilon"},
        quick={"steps": 10},
    ),
    AttackSpec(
        "cw", CWConfig, cw_attack,
        settings=lambda c: [(f"l2={c.l2_budget:g}", c)],
        budget=lambda c: {"l2_budget": c.l2_budget},
        deterministic=True,
        threat=lambda c: ("l2", c.l2_budget),
        white_box=True,
        threats=("l2",),
        at_budget=lambda norm, b, o: CWConfig(l2_budget=b, **member_options(o, {"l2_budget"}, "cw")),
        order=60,
        paper_table=PaperTable("table4_cw", "Table 4: Carlini-Wagner L2, successes", column="cw"),
        default_in=("l2",), cost=40,
        strongest=("l2",),
        shorthand="l2-budget",
        quick={"steps": 10, "binary_search_steps": 2},
    ),
):
    builtin_attack(_spec)
