"""robench from Python: attack any ``nn.Module`` and read the tables, as the CLI does.

``evaluate`` runs exactly what ``robench attack`` runs (the same seeded image set, attacks,
``judge``, result format, stored adversarials and resume) on a module robench did not build; in
place of a checkpoint's sha256 its result records a fingerprint of the module's weights, so a
stored result can be checked against the module later (``verify(path, model=...)``). ``report``
gives the CLI's tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attacks.options import parse_attack
from .attacks.runner import AttackRun, ResultExistsError, attack_model, summary_rows
from .checkpoints import weights_fingerprint
from .data import dataset_info
from .errors import ConfigError
from .models import Classifier, Normalize, check_logits
from .registry import file_name_part
from .results import DEFAULT_DIR


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` wrote (or found stored): one result file per attack."""

    paths: tuple[Path, ...]
    results: tuple[dict[str, Any], ...]

    def rows(self) -> list[dict[str, Any]]:
        """One row per attack setting: successes and avg|Z_true - Z_adv| over the repeats."""
        return [{"attack": r["attack"], "file": p.name} | row
                for p, r in zip(self.paths, self.results) for row in summary_rows(r)]

    def __str__(self) -> str:
        """The summary ``robench attack`` prints, for every attack, as plain text."""
        from .rendering import SUMMARY_HEAD, aligned_text, summary_grid

        return aligned_text(SUMMARY_HEAD, summary_grid((r["attack"], r) for r in self.results))


def prepare_module(model: nn.Module, dataset: str, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> nn.Module:
    """``model`` as robench attacks it: [0, 1] images to logits (a Normalize layer first when
    ``mean``/``std`` are given), checked to give one logit per class of ``dataset``."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"evaluate takes a torch.nn.Module, got a {type(model).__name__}")
    info = dataset_info(dataset)
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std, or neither (then the model takes [0, 1] images itself)")
    if mean is not None and std is not None:
        model = Classifier(Normalize(mean, std, info.channels), model)
    check_logits(model, info.channels, info.image_size, info.num_classes, f"model {type(model).__name__}")
    return model


def evaluate(
    model: nn.Module,
    dataset: str = "cifar10",
    attacks: Iterable[Any] = ("pixel:1",),
    images: int = 100,
    seed: int = 0,
    repeats: int = 5,
    out: str | Path | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
    act: str = "external",
    device: str = "auto",
    data_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Evaluation:
    """Attack ``model`` with each of ``attacks`` on ``images`` correctly classified test images of
    ``dataset`` and write one result per attack; returns them (a finished result already there is
    returned as stored, as the CLI does; ``force`` runs it again; an interrupted one resumes).

    ``model`` maps [0, 1] images to logits, or, with ``mean`` and ``std``, normalised images.
    ``attacks``: ``"pixel:3"``, ``"fgsm:0.02,0.04"``, ``("pgd", {"norm": "l2", "epsilons": [0.5]})`` or
    a config object (``robench.attacks.gradient.PGDConfig(...)``). ``out``: a ``.json`` file (one
    attack; with several it is the stem of their names) or a folder (default ``attacks/``). ``name``
    and ``act`` label the rows of ``report`` (default: the module's class name and "external").
    The model is moved to ``device`` and put in eval mode while it is attacked; its training mode is
    restored afterwards.
    """
    parsed = [parse_attack(a) for a in ([attacks] if isinstance(attacks, str) else list(attacks))]
    if not parsed:
        raise ConfigError("evaluate needs at least one attack")
    module = prepare_module(model, dataset, mean, std)
    label = name or type(model).__name__
    fingerprint = weights_fingerprint(module)
    block = {"path": "", "sha256": fingerprint, "external": "module", "clean_test_accuracy": None}
    runs = [AttackRun(model=label, act=act, dataset=dataset, attack=attack, options=options, images=images,
                      repeats=repeats, seed=seed) for attack, options in parsed]
    outs = [_out_path(out, run, label, len(runs)) for run in runs]
    was_training = module.training

    def load(dev: torch.device) -> tuple[nn.Module, dict[str, Any]]:
        return module.to(dev).eval(), dict(block)

    paths, results = [], []
    try:
        for run, path in zip(runs, outs):
            try:
                path, result = attack_model(run, load, path, data_dir, device, force, progress)
            except ResultExistsError as stored:
                path, result = stored.path, stored.result
            paths.append(path)
            results.append(result)
    finally:
        module.train(was_training)
    return Evaluation(tuple(paths), tuple(results))


def _out_path(out: str | Path | None, run: AttackRun, label: str, count: int) -> Path:
    if out is not None and str(out).endswith(".json"):
        out = Path(out)
        return out if count == 1 else out.parent / run.result_name(stem=out.stem)
    return Path(out if out is not None else DEFAULT_DIR) / run.result_name(stem=file_name_part(label))


def report(results: str | Path | Sequence[str | Path] = "attacks", format: str = "table",
           out: str | Path | None = None) -> Any:
    """The CLI's ``robench report`` tables for the results in a folder (several folders give one
    report each, in order). ``table`` prints them and returns the Report objects; ``markdown``,
    ``csv``, ``json`` and ``html`` return the text (and write it to ``out`` when given)."""
    from .rendering import check_format, render
    from .storage import atomic_write_bytes
    from .tables import build_report

    folders = [results] if isinstance(results, str | Path) else list(results)
    check_format(format)
    if format == "html" and len(folders) != 1:
        raise ConfigError("an html report is one page of one results folder")
    reports = [build_report(Path(f)) for f in folders]
    text = "".join(render(rep, format, folder) for rep, folder in zip(reports, folders))
    if format == "table":
        return reports if len(reports) > 1 else reports[0]
    if out is not None:
        atomic_write_bytes(out, text.encode())
    return text


def verify(results: str | Path | Sequence[str | Path], model: nn.Module | None = None, *,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None, dataset: str = "cifar10",
           device: str = "auto", data_dir: str | Path | None = None, replay: bool = False) -> list[Any]:
    """``robench verify`` from Python: rebuild every stored adversarial and re-judge it. Results of
    ``evaluate`` need ``model`` (and the same ``mean``/``std``), whose weights must match their
    fingerprint. Returns one Verification per result (``.ok``, ``.mismatches``)."""
    from .verification import verify_results

    paths = [results] if isinstance(results, str | Path) else list(results)
    module = prepare_module(model, dataset, mean, std) if model is not None else None
    return verify_results(paths, data_dir=data_dir, device=device, replay=replay, module=module)
