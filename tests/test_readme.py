"""README's "Your own model" Python example runs as printed (on the shipped checkpoint and the
real CIFAR-10 test set, so it needs ROBENCH_DATA, which .ci/run sets)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_block(heading: str, lang: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_your_own_model_python_example_runs_as_printed():
    data = os.environ.get("ROBENCH_DATA")
    if not data or not (Path(data) / "cifar-10-batches-py").is_dir():
        pytest.skip("needs the real CIFAR-10 test set in $ROBENCH_DATA (.ci/run provides it)")
    code = readme_block("### From Python (`robench.evaluate`)", "python")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eps=0.04" in done.stdout and "mynet" in done.stdout


def test_readme_is_short_and_links_the_write_ups_that_moved_to_docs():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    setup = text[text.index("## Set up a fresh machine (two commands)"):text.index("## Commands")]
    assert re.findall(r"```bash\n(.*?)\n```", setup, re.S) == [
        'python3 -m venv .venv && .venv/bin/pip install torch==2.14.1 torchvision==0.29.1 -e ".[test,plot]" && '
        ".venv/bin/robench suite configs/quickstart.yaml",
        ".venv/bin/pytest -q"]
    commands = readme_block("## Commands", "bash")
    for command in ("train", "models", "attack", "report", "suite", "stats", "check", "verify", "show", "plot"):
        assert f"robench {command} " in commands
    links = re.findall(r"\]\(((?:docs/|REPRODUCTION)[^)#]*)", text)
    assert {"REPRODUCTION.md", "docs/attacks.md", "docs/results.md", "docs/benchmarks.md", "docs/extending.md"} <= set(links)
    assert all((REPO / link).is_file() for link in links), [link for link in links if not (REPO / link).is_file()]


def test_the_benchmark_write_ups_keep_their_commands_and_machines():
    attacks, benchmarks = ((REPO / "docs" / name).read_text() for name in ("attacks.md", "benchmarks.md"))
    assert "## Attack strength (`bench/attack_strength.py`)" in attacks and "python bench/attack_strength.py" in attacks
    assert "## Speed (`bench/`)" in benchmarks and "## Scaling out" in benchmarks
    assert "2-core x86_64 CPU machine" in benchmarks and "python bench/" in benchmarks
