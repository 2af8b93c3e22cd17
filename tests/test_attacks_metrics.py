import torch

from robench.attacks.base import Judgement
from robench.attacks.metrics import aggregate, gain_vs_relu, mean_std, repeat_summary


def _judgement(success, abs_z):
    n = len(success)
    z = torch.zeros(n)
    return Judgement(torch.tensor(success), torch.zeros(n, dtype=torch.long), z, z, z, torch.tensor(abs_z), z, z, z,
                     torch.zeros(n, dtype=torch.long))


def test_avg_abs_z_counts_successes_only():
    j = _judgement([True, False, True, False], [0.2, 0.9, 0.4, 0.9])
    s = repeat_summary(j)
    assert s["successes"] == 2 and s["success_rate"] == 0.5
    assert abs(s["avg_abs_z"] - 0.3) < 1e-7
    assert repeat_summary(_judgement([False], [0.5]))["avg_abs_z"] is None


def test_aggregate_mean_and_sample_std():
    reps = [{"successes": 2, "success_rate": 0.2, "avg_abs_z": 0.5},
            {"successes": 4, "success_rate": 0.4, "avg_abs_z": None}]
    agg = aggregate(reps)
    assert agg["successes_mean"] == 3 and abs(agg["successes_std"] - 2 ** 0.5) < 1e-12
    assert agg["avg_abs_z_mean"] == 0.5 and agg["avg_abs_z_std"] == 0.0
    assert mean_std([]) == (None, None)


def test_gain_vs_relu_as_the_paper_quotes_it():
    assert abs(gain_vs_relu(29, 61) - (1 - 29 / 61)) < 1e-12  # Table 2, lenet5 1 px: 52 %
    assert gain_vs_relu(5, 0) is None
