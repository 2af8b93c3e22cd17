"""The ``robench`` command: parses options, calls one library function, prints.

Errors a user can act on (RobenchError, ValueError from a registry) become one line on stderr and
a non-zero exit; nothing here holds logic the library does not expose.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, RobenchError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Adversarial robustness of image classifiers by activation.")
out_console = Console()
T = TypeVar("T")


def _fail(message: str, code: int = 1) -> None:
    print(f"robench: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"robench: warning: {message}", file=sys.stderr)


def run_guarded(fn: Callable[[], T]) -> T:
    """Run a library call; turn user-facing errors into one stderr line and exit codes."""
    warnings.showwarning = _show_warning
    # torch.compile logs where it found (no) CUDA on every first compile: noise for a CLI user.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return fn()
    except (RobenchError, ValueError, FloatingPointError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume where it stopped", 130)
    raise AssertionError("unreachable")


def parse_act_options(items: list[str] | None) -> dict[str, Any]:
    """``["per_channel=true", "hinges=[0,1,2]"]`` -> dict, values parsed as YAML scalars/lists."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--act-opt takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--act-opt {key}: cannot parse value {value!r}") from None
    return options


@app.command()
def train(
    model: str = typer.Option("lenet5", help="model name (robench models --known lists them)"),
    act: str = typer.Option("relu", help="activation name"),
    dataset: str = typer.Option("cifar10", help="cifar10, cifar100 or mnist"),
    epochs: int = typer.Option(15),
    seed: int = typer.Option(0),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="random crop (pad 4) + flip"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    act_opt: list[str] = typer.Option(None, "--act-opt", help="activation option KEY=VALUE (repeatable)"),
    config: Path = typer.Option(None, help="YAML TrainConfig; command-line options are ignored when given"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    out: Path = typer.Option(None, help="checkpoint path (default checkpoints/<model>-<act>-<dataset>[-aug]-s<seed>.pt)"),
    data_dir: Path = typer.Option(None, help="dataset root (else $ROBENCH_DATA, else the user cache)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train a model with a chosen activation and write a checkpoint with its JSON sidecar."""
    from .config import TrainConfig, config_from_dict, load_yaml
    from .train import train as run_train

    def go() -> Any:
        if config is not None:
            cfg = config_from_dict(TrainConfig, load_yaml(config), str(config))
        else:
            cfg = TrainConfig(model=model, act=act, dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                              augment=augment, seed=seed, act_options=parse_act_options(act_opt))
        return run_train(cfg, out=out, data_dir=data_dir, device=device, show_progress=not quiet)

    result = run_guarded(go)
    resumed = f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ""
    out_console.print(
        f"{result.path}: clean test accuracy {result.test_accuracy:.4f} "
        f"(error {100 * (1 - result.test_accuracy):.2f} %), {result.wall_time_s:.0f} s{resumed}"
    )


@app.command()
def models(
    directory: Path = typer.Option(Path("checkpoints"), "--dir", help="checkpoint folder"),
    known: bool = typer.Option(False, help="list the known models, activations and datasets instead"),
) -> None:
    """List the checkpoints in a folder (or the names robench knows)."""
    if known:
        from .activations import activation_names
        from .data import dataset_names
        from .models import model_names

        out_console.print(f"models: {', '.join(model_names())}")
        out_console.print(f"activations: {', '.join(activation_names())}")
        out_console.print(f"datasets: {', '.join(dataset_names())}")
        return
    from .checkpoints import list_checkpoints

    rows = list_checkpoints(directory)
    if not rows:
        out_console.print(f"no checkpoints in {directory}")
        return
    table = Table(title=f"checkpoints in {directory}")
    for col in ("file", "model", "act", "dataset", "epochs", "seed", "aug", "test acc", "official data", "KiB"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(r["file"], f"[red]{r['error']}[/red]", *[""] * 7, str(r["size_kib"]))
            continue
        acc = f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-"
        table.add_row(r["file"], r["model"], r["act"], r["dataset"], str(r["epochs"]), str(r["seed"]),
                      str(r["augment"]), acc, str(r["data_official"]), str(r["size_kib"]))
    out_console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
