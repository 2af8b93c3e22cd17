"""The CI's size budget (.ci/size_check.py): a file over 1.5 MiB or a tree over 200 MiB fails, in one line."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("size_check", REPO / ".ci" / "size_check.py")
size_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(size_check)


def test_a_file_over_1_5_mib_or_a_tree_over_200_mib_fails_in_one_line():
    assert size_check.over_budget({"a": 1_572_864, "b": 10}) is None  # 1.5 MiB exactly is allowed
    why = size_check.over_budget({"a": 1_572_865, "b": 10, "c": 2_000_000})
    assert why.startswith("2 tracked file(s) over 1.5 MiB, the largest c") and "\n" not in why
    many = {f"f{i}": 1_500_000 for i in range(140)}  # 200.3 MiB of files each under the limit
    assert "over the 200 MiB ceiling" in size_check.over_budget(many)
    assert size_check.over_budget(dict(list(many.items())[:139])) is None


def test_the_tracked_sizes_are_git_s():
    sizes = size_check.tracked_sizes(str(REPO))
    assert "pyproject.toml" in sizes and sizes["pyproject.toml"] == (REPO / "pyproject.toml").stat().st_size
    assert not any(name.startswith("build/") for name in sizes)
