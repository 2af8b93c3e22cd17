"""The ``robench`` command: parses options, calls one library function, prints.

Errors a user can act on (RobenchError, ValueError from a registry) become one line on stderr and
a non-zero exit; nothing here holds logic the library does not expose.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from .errors import ConfigError, RobenchError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Adversarial robustness of image classifiers by activation.")


def _console() -> Console:
    """stdout console; wide when piped, so tables written to a file or CI log keep every column."""
    return Console(width=None if sys.stdout.isatty() else 200)


T = TypeVar("T")


def _fail(message: str, code: int = 1) -> None:
    print(f"robench: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"robench: warning: {message}", file=sys.stderr)


def run_guarded(fn: Callable[[], T], error_code: int = 1) -> T:
    """Run a library call; turn user-facing errors into one stderr line and exit codes."""
    warnings.showwarning = _show_warning
    # torch.compile logs where it found (no) CUDA on every first compile: noise for a CLI user.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return fn()
    except (RobenchError, ValueError, FloatingPointError) as err:
        _fail(str(err), error_code)
    except OSError as err:  # a file robench reads or writes that the system refuses: not a bug in robench
        where = f" {err.filename}" if err.filename else ""
        _fail(f"cannot access{where}: {err.strerror or err}", error_code)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume where it stopped", 130)
    except (MemoryError, RuntimeError) as err:  # out of memory anywhere in attack or train: one line, as in a suite
        from .memory import is_out_of_memory, out_of_memory_message

        if not is_out_of_memory(err):
            raise
        _fail(out_of_memory_message(err), error_code)
    raise AssertionError("unreachable")


def _emit(text: str, out: Path | None) -> None:
    """A rendered report to stdout, or atomically to ``out``."""
    from .storage import atomic_write_bytes

    if out is None:
        sys.stdout.write(text)
    else:
        run_guarded(lambda: atomic_write_bytes(out, text.encode()))
        _console().print(f"wrote {out}")


def parse_act_options(items: list[str] | None, flag: str = "--act-opt") -> dict[str, Any]:
    """``["per_channel=true", "hinges=[0,1,2]"]`` -> dict, values parsed as YAML scalars/lists."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {key}: cannot parse value {value!r}") from None
    return options


@app.command()
def train(
    model: str = typer.Option("lenet5", help="model name (robench models --known lists them) or package.module:factory"),
    act: str = typer.Option("relu", help="activation name"),
    dataset: str = typer.Option("cifar10", help="cifar10, cifar100 or mnist"),
    epochs: int = typer.Option(8),
    seed: int = typer.Option(0),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="random crop (pad 4) + flip"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    act_opt: list[str] = typer.Option(None, "--act-opt", help="activation option KEY=VALUE (repeatable)"),
    adv: str = typer.Option("none", help="adversarial training: none, pgd (Madry), trades or fgsm-rs (Wong)"),
    adv_eps: str = typer.Option(None, help="adversarial budget, e.g. 8/255 (default 8/255; MNIST 0.3)"),
    adv_steps: int = typer.Option(0, help="inner attack steps (default 10; MNIST 40; fgsm-rs 1)"),
    adv_step_size: str = typer.Option(None, help="inner step size (default 2.5 eps / steps, 0.01 at MNIST's "
                                                 "0.3; fgsm-rs 1.25 eps)"),
    trades_beta: float = typer.Option(6.0, help="trades: weight of the KL term"),
    adv_norm: str = typer.Option("linf", help="adversarial threat model: linf or l2"),
    config: Path = typer.Option(None, help="YAML TrainConfig; command-line options are ignored when given"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    out: Path = typer.Option(None, help="checkpoint path (default checkpoints/<model>-<act>-<dataset>[-aug]-s<seed>.pt)"),
    data_dir: Path = typer.Option(None, help="dataset root (else $ROBENCH_DATA, else the user cache)"),
    force: bool = typer.Option(False, help="overwrite a finished checkpoint"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train a model with a chosen activation and write a checkpoint with its JSON sidecar."""
    from .config import TrainConfig, config_from_dict, load_yaml
    from .train import train as run_train

    def one_budget(text: str | None, flag: str) -> float:
        try:  # no attack module is imported for this: training needs none
            return float(Fraction(text)) if text is not None else 0.0
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{flag} takes one number or fraction (8/255), got {text!r}") from None

    def go() -> Any:
        if config is not None:
            cfg = config_from_dict(TrainConfig, load_yaml(config), str(config))
        else:
            cfg = TrainConfig(model=model, act=act, dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                              augment=augment, seed=seed, act_options=parse_act_options(act_opt), adv=adv,
                              adv_norm=adv_norm, adv_eps=one_budget(adv_eps, "--adv-eps"), adv_steps=adv_steps,
                              adv_step_size=one_budget(adv_step_size, "--adv-step-size"), trades_beta=trades_beta)
        return run_train(cfg, out=out, data_dir=data_dir, device=device, show_progress=not quiet, force=force)

    result = run_guarded(go)
    resumed = f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ""
    robust = "" if result.robust_accuracy is None else f", held-out PGD-10 accuracy {result.robust_accuracy:.4f}"
    _console().print(
        f"{result.path}: clean test accuracy {result.test_accuracy:.4f} "
        f"(error {100 * (1 - result.test_accuracy):.2f} %){robust}, {result.wall_time_s:.0f} s{resumed}"
    )
    if result.stored:
        _console().print(f"stored: {result.path} was already trained with this config; pass --force to train it again")


@app.command()
def models(
    directory: Path = typer.Option(Path("checkpoints"), "--dir", help="checkpoint folder"),
    known: bool = typer.Option(False, help="list the known models, activations and datasets instead"),
) -> None:
    """List the checkpoints in a folder (or the names robench knows)."""
    if known:
        from .activations import activation_names
        from .attacks import attack_names
        from .data import dataset_names
        from .models import model_names

        _console().print(f"models: {', '.join(model_names())}")
        _console().print(f"activations: {', '.join(activation_names())}")
        _console().print(f"datasets: {', '.join(dataset_names())}")
        _console().print(f"attacks: {', '.join(attack_names())}")
        return
    from .checkpoints import list_checkpoints

    rows = list_checkpoints(directory)
    if not rows:
        _console().print(f"no checkpoints in {directory}")
        return
    table = Table(title=f"checkpoints in {directory}")
    for col in ("file", "model", "act", "dataset", "epochs", "seed", "aug", "training", "test acc", "robust acc",
                "official data", "KiB"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(r["file"], f"[red]{r['error']}[/red]", *[""] * 9, str(r["size_kib"]))
            continue
        acc, robust = (f"{r[k]:.4f}" if r.get(k) is not None else "-" for k in ("test_accuracy", "robust_accuracy"))
        table.add_row(r["file"], r["model"], r["act"], r["dataset"], str(r["epochs"]), str(r["seed"]),
                      str(r["augment"]), r["training"], acc, robust, str(r["data_official"]), str(r["size_kib"]))
    _console().print(table)


@app.command()
def attack(
    model: str = typer.Option("lenet5", help="model name or package.module:factory (the checkpoint must match)"),
    act: str = typer.Option("relu"),
    dataset: str = typer.Option("cifar10"),
    attack: str = typer.Option("pixel", "--attack", help="attack name (robench models --known lists them)"),
    pixels: int = typer.Option(None, help="pixel, sparse_rs, ensemble: pixels changed (default 1)"),
    population: int = typer.Option(None, help="pixel: DE population (default 400)"),
    generations: int = typer.Option(None, help="pixel: most DE generations (default 40)"),
    mutation: str = typer.Option(None, help="pixel: de (x_r1 + F(x_r2 - x_r3)) or literal (the paper's printed rule)"),
    strategy: str = typer.Option(None, help="pixel: rand1 (the paper) or best1"),
    crossover: str = typer.Option(None, help="pixel: none (the paper) or pixel (per-pixel binomial)"),
    crossover_rate: float = typer.Option(None, help="pixel: crossover rate (default 1/pixels)"),
    queries: int = typer.Option(None, help="sparse_rs (default 16400), square, autoattack (5000): query budget per image"),
    p_init: float = typer.Option(None, help="sparse_rs: fraction of pixels moved at first; square: of the image "
                                                 "the first squares cover (default 0.8 for both)"),
    eps: str = typer.Option(None, help="fgsm, pgd, apgd, apgd_t, square, ensemble, autoattack: comma-separated "
                                        "budgets, e.g. 1/255,8/255; fmn: one budget"),
    norm: str = typer.Option(None, help="pgd, apgd, apgd_t, autoattack: linf or l2; fmn: linf, l2, l1 or l0; "
                                         "ensemble: its threat model"),
    steps: int = typer.Option(None, help="pgd, apgd, apgd_t, autoattack (default 100), fmn (100), cw (1000): iterations"),
    restarts: int = typer.Option(None, help="pgd, apgd, apgd_t: random restarts (default 1)"),
    loss: str = typer.Option(None, help="pgd: ce (default) or margin; apgd: ce (default) or dlr"),
    members: str = typer.Option(None, help="ensemble, autoattack: comma-separated attacks, cheap first (e.g. de,sparse_rs)"),
    l2_budget: float = typer.Option(None, help="cw: L2 budget a success must stay within"),
    forward: str = typer.Option(None, help="pixel, sparse_rs: the search's forward: auto (incremental where the "
                                           "model splits), incremental, eager or compiled"),
    search_dtype: str = typer.Option(None, help="pixel, sparse_rs: the search's precision: float32, bf16 or fp16 "
                                                "(a GPU's; verdicts stay float32)"),
    attack_opt: list[str] = typer.Option(None, "--attack-opt", help="any other field of the attack's config, KEY=VALUE "
                                                                     "(repeatable; checked against the config's fields)"),
    early_stop: bool = typer.Option(None, "--early-stop/--no-early-stop",
                                    help="pixel: stop an image at its first success (default) or search every "
                                         "generation for the lowest true-class probability (the paper's avg|Z|)"),
    images: int = typer.Option(100, help="correctly classified test images to attack"),
    repeats: int = typer.Option(5, help="independent repeats (random attacks only)"),
    seed: int = typer.Option(0, help="seeds the image set and every repeat"),
    checkpoint: Path = typer.Option(None, help="default checkpoints/<model>-<act>-<dataset>-s0.pt; a plain "
                                               "state_dict loads into --model/--act (marked external)"),
    device: str = typer.Option("auto"),
    out: Path = typer.Option(None, help="result file (default attacks/<checkpoint>--<attack><tag>-seed<seed>.json)"),
    data_dir: Path = typer.Option(None),
    force: bool = typer.Option(False, help="overwrite a finished result"),
    quiet: bool = typer.Option(False),
) -> None:
    """Attack a trained model and write one JSON result (resumes an interrupted run)."""
    from .attacks.options import attack_options, check_option_keys
    from .attacks.runner import AttackRun, ResultExistsError, run_attack
    from .rendering import SUMMARY_HEAD, summary_grid

    def go() -> Any:
        given = {"pixels": pixels, "population": population, "generations": generations, "mutation": mutation,
                 "strategy": strategy, "crossover": crossover, "crossover-rate": crossover_rate, "queries": queries,
                 "p-init": p_init, "eps": eps, "norm": norm, "steps": steps, "restarts": restarts, "loss": loss,
                 "members": members, "l2-budget": l2_budget, "forward": forward,
                 "search-dtype": search_dtype, "early-stop": early_stop}
        options = attack_options(attack, given)
        extra = check_option_keys(attack, parse_act_options(attack_opt, "--attack-opt"))
        clash = sorted(set(options) & set(extra))
        if clash:
            raise ConfigError(f"--attack-opt {clash[0]} is set by its own flag too")
        run = AttackRun(model=model, act=act, dataset=dataset, attack=attack, options=options | extra,
                        images=images, repeats=repeats, seed=seed, checkpoint=str(checkpoint) if checkpoint else None)
        try:
            return (*run_attack(run, out=out, data_dir=data_dir, device=device, force=force, show_progress=not quiet),
                    False)
        except ResultExistsError as stored:  # like make: what is there is shown, not recomputed
            return stored.path, stored.result, True

    path, result, stored = run_guarded(go)
    table = Table(title=f"{model} {act} {dataset}: {attack} on {len(result['image_set']['indices'])} images "
                        f"(drawn {result['image_set']['drawn']})")
    for col in SUMMARY_HEAD[1:]:  # the title names the attack
        table.add_column(col)
    for row in summary_grid([(attack, result)]):
        table.add_row(*row[1:])
    _console().print(table)
    _console().print(f"stored: {path}; pass --force to run it again" if stored else f"wrote {path}")


@app.command()
def report(
    results: Path = typer.Option(Path("attacks"), help="folder of result JSON files"),
    format: str = typer.Option("table", "--format", help="table, markdown, csv, json or html (one offline page with "
                                                          "plots and a gallery; to stdout without --out)"),
    out: Path = typer.Option(None, help="write to this file instead of stdout"),
    checkpoints: Path = typer.Option(Path("checkpoints"), help="checkpoint folder for the seed statistics (html)"),
    seeds: Path = typer.Option(None, help="multi-seed result folder, e.g. attacks/seeds: adds seed statistics (html)"),
) -> None:
    """Tables like the paper's Tables 2-4 from stored results, with the paper's numbers beside."""
    from .rendering import check_format, render
    from .tables import build_report

    run_guarded(lambda: check_format(format, out))
    if seeds is not None and format != "html":
        _fail("--seeds needs --format html (robench stats shows seed statistics alone)")
    if format == "html" and out is not None:  # the page takes seconds to draw: fail before, not after
        from .storage import check_writable

        run_guarded(lambda: check_writable(out, "report"))
    rep = run_guarded(lambda: build_report(results))
    if not rep.tables:
        _fail(f"no finished results in {results}")
    text = run_guarded(lambda: render(rep, format, results, console=_console(), seeds=seeds, checkpoints=checkpoints))
    if format != "table":
        _emit(text, out)


@app.command()
def stats(
    checkpoints: Path = typer.Option(Path("checkpoints"), help="checkpoint folder (clean error and final loss over seeds)"),
    results: Path = typer.Option(None, help="result folder of a multi-seed suite, e.g. attacks/seeds"),
    against: str = typer.Option("relu", help="activation the attack figures are tested against, or "
                                "best-of:ACT,ACT,... (the best mean among them, per metric)"),
    format: str = typer.Option("table", "--format", help="table, markdown or json"),
    out: Path = typer.Option(None, help="write to this file instead of stdout"),
) -> None:
    """Mean ± std across training seeds and Welch t-tests (the paper's Tables 1 and 7, and robustness)."""
    from .stats import build_stats, render_json, render_markdown, render_rich

    renderers = {"markdown": render_markdown, "json": render_json}
    if format not in (*renderers, "table"):
        _fail(f"unknown format {format!r}; known: table, {', '.join(renderers)}")
    if format == "table" and out is not None:
        _fail("--out needs --format markdown or json")
    tables, notes = run_guarded(lambda: build_stats(checkpoints, results, against))
    if not tables:  # the notes name what was left out (a sidecar of other weights), so "no checkpoints" is never the whole story
        _fail(f"nothing to compare: no checkpoints in {checkpoints}" + (f" and no finished results in {results}" if results else "")
              + "".join(f"; {note}" for note in notes))
    if format == "table":
        for item in render_rich(tables, notes):
            _console().print(item)
        return
    text = renderers[format](tables, notes)
    _emit(text, out)


class _RayOptionalValue(TyperCommand):
    """``--ray`` with no value (last, or before another option) means a local cluster: Typer has no
    option with an optional value, so the bare flag is rewritten to ``--ray=local`` before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = ["--ray=local" if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")) else a
                for i, a in enumerate(args)]
        return super().parse_args(ctx, args)


@app.command(cls=_RayOptionalValue)
def suite(
    config: Path = typer.Argument(..., help="suite YAML, e.g. configs/paper-lenet5.yaml"),
    device: str = typer.Option("auto"),
    data_dir: Path = typer.Option(None),
    workers: int = typer.Option(1, help="worker processes, one cell each at a time, with cores/N torch threads; on "
                                        "CUDA, N per GPU (one GPU is shared). With --ray: cells per GPU, or the CPUs "
                                        "of a local cluster"),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]",
                            help="run the cells as Ray tasks (needs the ray extra): alone, on a local cluster; "
                                 "'auto' or host:port joins a running one. Put it after CONFIG"),
    quiet: bool = typer.Option(False),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the cells that would run (and how many are done); run nothing"),
) -> None:
    """Run a models × activations × seeds × attacks grid: missing cells run, finished ones are skipped.

    A suite with a ``train:`` section first trains the checkpoints it lacks. A cell that fails skips
    only the cells that need it; the failures are listed at the end (exit 1)."""
    from .rendering import render
    from .suite import SuiteIncomplete, load_suite, plan, run_suite
    from .tables import build_report

    if dry_run:
        s = run_guarded(lambda: load_suite(config))
        planned = run_guarded(lambda: plan(s))
        for cell, state, why in planned:
            if state != "done":
                print(f"{state:8s} {cell.out}" + (f": {why}" if why else ""))
        todo = sum(1 for _, state, _ in planned if state != "done")
        _console().print(f"suite {s.name}: {len(planned)} cells, {len(planned) - todo} done, {todo} to run")
        return

    def go() -> Any:
        s = load_suite(config)

        def say(run: Any, what: str) -> None:
            if not quiet:
                print(f"{what:8s} {run.result_name()}", file=sys.stderr)

        def say_train(path: Path, what: str) -> None:
            if not quiet:
                print(f"{what:8s} {path}", file=sys.stderr)

        try:
            return s, run_suite(s, data_dir=data_dir, device=device, show_progress=not quiet, on_cell=say,
                                on_train=say_train, workers=workers, ray=ray), []
        except SuiteIncomplete as incomplete:
            return s, incomplete.done, incomplete.failures

    s, cells, failures = run_guarded(go)
    if not cells and not failures:  # a training-only suite
        _console().print(f"suite {s.name}: {len(s.trainings())} checkpoints in place; compare them with robench stats")
        return
    counts = {k: sum(1 for _, w in cells if w == k) for k in ("ran", "resumed", "skipped")}
    failed = f", {len(failures)} failed or not run" if failures else ""
    _console().print(f"suite {s.name}: {counts['ran']} ran, {counts['resumed']} resumed, {counts['skipped']} already done"
                     f"{failed}")
    if any(w in counts for _, w in cells):
        render(run_guarded(lambda: build_report(s.results)), "table", console=_console())
    for cell_id, why in failures:
        print(f"robench: failed: {cell_id}: {why}", file=sys.stderr)
    if failures:
        raise typer.Exit(1)


@app.command()
def check(
    baseline: Path = typer.Option(..., help="baseline YAML, e.g. configs/baseline-ci.yaml"),
    results: Path = typer.Option(None, help="results folder (default: the one the baseline names)"),
    update: bool = typer.Option(False, help="rewrite the baseline from the current results"),
) -> None:
    """Fail (exit 1) when a cell is less robust than its baseline allows; exit 2 on bad input."""
    from .baseline import check_baseline, load_baseline, update_baseline

    def results_dir() -> Path:
        if results is not None:
            return results
        if baseline.exists():
            return Path(load_baseline(baseline).get("results", "attacks"))
        return Path("attacks")

    if update:
        n = run_guarded(lambda: update_baseline(baseline, results_dir()), error_code=2)
        _console().print(f"wrote {baseline} with {n} cells")
        return
    verdicts = run_guarded(lambda: check_baseline(baseline, results_dir()), error_code=2)
    table = Table(title=f"robustness check against {baseline}")
    for col in ("cell", "baseline", "now", "tolerance", "verdict"):
        table.add_column(col)
    for v in verdicts:
        now = "-" if v.now is None else f"{v.now:.2f}"
        mark = "[green]pass[/green]" if v.passed else f"[red]FAIL[/red] {v.reason}"
        table.add_row(v.cell, f"{v.baseline:.2f}", now, f"{v.tolerance:.2f}", mark)
    _console().print(table)
    failed = sum(not v.passed for v in verdicts)
    if failed:
        print(f"robench: {failed} of {len(verdicts)} cells regressed or are missing", file=sys.stderr)
        raise typer.Exit(1)
    _console().print(f"all {len(verdicts)} cells pass")


@app.command()
def verify(
    results: list[Path] = typer.Argument(None, help="result files or folders (default: the --results folder)"),
    results_dir: Path = typer.Option(None, "--results", help="verify every result in this folder"),
    replay: bool = typer.Option(False, help="re-run, from their recorded seeds, repeats that stored no adversarials"),
    strict: bool = typer.Option(False, help="fail (exit 1) on results that stored no adversarials, unless replayed"),
    model: list[str] = typer.Option(None, "--model", help="package.module:factory a result was made with, allowed to be "
                                                          "imported (repeatable; never from the working folder)"),
    device: str = typer.Option("auto"),
    data_dir: Path = typer.Option(None),
) -> None:
    """Rebuild every stored adversarial, rerun the model and check every recorded number.

    Exit 0 when everything agrees, 1 on any mismatch (named), 2 on bad input."""
    from .verification import verify_results

    paths = list(results or []) + ([results_dir] if results_dir else [])
    if not paths:
        _fail("name result files or folders, or pass --results DIR", 2)

    def say(v: Any) -> None:
        if v.mismatches:
            text = f"[red]MISMATCH[/red] {len(v.mismatches)}"
        elif v.legacy:
            text = f"[yellow]clean side only[/yellow]: {v.legacy} repeats stored no adversarials (--replay re-runs them)"
        else:
            text = "[green]ok[/green]" + (f" ({v.replayed} repeats replayed)" if v.replayed else "")
        _console().print(f"{v.path}: {v.images} images, {v.repeats} repeats: {text}")
        for m in v.mismatches[:20]:
            print(f"robench: mismatch: {v.path}: {m}", file=sys.stderr)
        if len(v.mismatches) > 20:
            print(f"robench: mismatch: {v.path}: ... {len(v.mismatches) - 20} more", file=sys.stderr)

    done = run_guarded(lambda: verify_results(paths, data_dir=data_dir, device=device, replay=replay, on_result=say,
                                                    factories=model or ()),
                       error_code=2)
    bad = [v for v in done if v.mismatches]
    legacy = [v for v in done if v.legacy and not v.mismatches]
    if bad:
        print(f"robench: {len(bad)} of {len(done)} results do not verify", file=sys.stderr)
        raise typer.Exit(1)
    if legacy and strict:
        print(f"robench: {len(legacy)} of {len(done)} results store no adversarials (--strict)", file=sys.stderr)
        raise typer.Exit(1)
    note = f"; {len(legacy)} checked on their clean side only" if legacy else ""
    _console().print(f"all {len(done)} results verify{note}")


@app.command()
def show(
    result: Path = typer.Argument(..., help="result JSON file"),
    out: Path = typer.Option(..., help="PNG to write"),
    images: int = typer.Option(8, help="successful images to show, the first ones of the repeat"),
    setting: str = typer.Option(None, help="setting label, e.g. 3px or eps=0.02 (default: the first)"),
    repeat: int = typer.Option(0, help="repeat number"),
    data_dir: Path = typer.Option(None),
) -> None:
    """Clean and adversarial images side by side, rebuilt from a stored result (needs robench[plot])."""
    from .gallery import gallery

    _console().print(f"wrote {run_guarded(lambda: gallery(result, out, images, setting, repeat, data_dir))}")


plot_app = typer.Typer(no_args_is_help=True, help="PNG figures from checkpoints' sidecars and results (needs robench[plot]).")
app.add_typer(plot_app, name="plot")


@plot_app.command("curves")
def plot_curves_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.pt) or its sidecar (.json)"),
    out: Path = typer.Option(..., help="PNG to write"),
    epochs: str = typer.Option(None, help="comma-separated epochs (0 = init); default a spread"),
) -> None:
    """Activation shape per layer across epochs (paper figures 1-2)."""
    from .plot import plot_curves

    chosen = [int(e) for e in epochs.split(",")] if epochs else None
    _console().print(f"wrote {run_guarded(lambda: plot_curves(checkpoint, out, chosen))}")


@plot_app.command("loss")
def plot_loss_cmd(
    checkpoints: list[Path] = typer.Argument(..., help="checkpoints (.pt or .json)"),
    out: Path = typer.Option(..., help="PNG to write"),
) -> None:
    """Training loss per epoch of several checkpoints (paper figure 3)."""
    from .plot import plot_losses

    _console().print(f"wrote {run_guarded(lambda: plot_losses(list(checkpoints), out))}")


@plot_app.command("eps")
def plot_eps_cmd(
    model: str = typer.Option("lenet5"),
    results: Path = typer.Option(Path("attacks")),
    out: Path = typer.Option(..., help="PNG to write"),
) -> None:
    """FGSM successes against epsilon per activation."""
    from .plot import plot_eps

    _console().print(f"wrote {run_guarded(lambda: plot_eps(results, model, out))}")


@plot_app.command("curve")
def plot_curve_cmd(
    attack: str = typer.Option("fmn", help="fmn (minimal distances) or pgd (its epsilons)"),
    norm: str = typer.Option("l2", help="the attack's norm"),
    model: str = typer.Option("lenet5"),
    results: Path = typer.Option(Path("attacks"), help="results folder, e.g. attacks/seeds for a band across seeds"),
    out: Path = typer.Option(..., help="PNG to write"),
) -> None:
    """Success rate against budget per activation, from FMN or PGD results (a band across seeds)."""
    from .plot import plot_curve

    _console().print(f"wrote {run_guarded(lambda: plot_curve(results, attack, norm, model, out))}")


def _needs_a_source(command: str, checkpoints: Path | None, results: Path | None) -> None:
    if checkpoints is None and results is None:
        _fail(f"robench plot {command} needs --checkpoints, --results or both")


@plot_app.command("forest")
def plot_forest_cmd(
    checkpoints: Path = typer.Option(None, help="checkpoint folder: clean error and final loss across seeds"),
    results: Path = typer.Option(None, help="multi-seed results folder, e.g. attacks/seeds: attack metrics across seeds"),
    against: str = typer.Option("relu", help="the activation every other one is compared with, or "
                                "best-of:ACT,ACT,... (as in robench stats)"),
    metric: str = typer.Option(None, help="only the metrics whose name contains this, e.g. 'clean error'"),
    out: Path = typer.Option(..., help="PNG to write"),
) -> None:
    """Each activation's difference to ReLU with its Welch 95 % CI across seeds, a panel per metric."""
    from .plot import plot_forest

    _needs_a_source("forest", checkpoints, results)
    _console().print(f"wrote {run_guarded(lambda: plot_forest(checkpoints, results, out, against, metric))}")


@plot_app.command("tradeoff")
def plot_tradeoff_cmd(
    checkpoints: Path = typer.Option(None, help="checkpoint folder: adversarially trained ones store a robust accuracy"),
    results: Path = typer.Option(None, help="results folder: the worst case over its attacks per threat"),
    threat: str = typer.Option(None, help="only the threats whose label contains this, e.g. 'linf 0.1' or 'l0 3px'"),
    out: Path = typer.Option(..., help="PNG to write"),
) -> None:
    """Clean against robust accuracy, one point per checkpoint coloured by activation."""
    from .plot import plot_tradeoff

    _needs_a_source("tradeoff", checkpoints, results)
    _console().print(f"wrote {run_guarded(lambda: plot_tradeoff(checkpoints, results, out, threat))}")


@plot_app.command("eps-band")
def plot_eps_band_cmd(
    model: str = typer.Option("lenet5"),
    norm: str = typer.Option("linf", help="the threat's norm: linf, l2, l1 or l0"),
    results: Path = typer.Option(Path("attacks"), help="results folder, e.g. attacks/strong-seeds-mlp for a band across seeds"),
    out: Path = typer.Option(..., help="PNG to write"),
) -> None:
    """Robust accuracy (worst case) against the budget per activation, a band from the lowest to the highest seed."""
    from .plot import plot_eps_band

    _console().print(f"wrote {run_guarded(lambda: plot_eps_band(results, model, out, norm))}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
