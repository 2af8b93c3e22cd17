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
