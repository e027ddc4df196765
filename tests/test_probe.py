"""The L-BFGS probe on features made here: it agrees with scikit-learn at the same regularisation, converges,
chooses its L2 strength on validation, and handles one example per class, imbalance, 100 classes and NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from transferlab.errors import ConfigError, DataError
from transferlab.probe.options import ProbeOptions
from transferlab.probe.search import fit_probe
from transferlab.probe.solver import Problem, objective, solve


def make_features(n: int, d: int = 48, k: int = 6, seed: int = 0, noise: float = 1.0, weights: list[float] | None = None):
    """Backbone-like features (non-negative, a shared mean, correlated): ReLU of a random projection of noisy
    class centres. ``weights`` sets the class frequencies (balanced by default)."""
    g = np.random.default_rng(seed)
    centres = g.normal(0, 1, (k, 16))
    proj = g.normal(0, 1, (16, d))
    p = None if weights is None else np.asarray(weights) / np.sum(weights)

    def draw(m: int, seed_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = np.random.default_rng(seed + seed_offset)
        y = r.choice(k, m, p=p) if p is not None else np.arange(m) % k
        z = centres[y] + noise * r.normal(0, 1, (m, 16))
        x = np.maximum(z @ proj + 1.0, 0.0)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)

    return draw(n, 1), draw(400, 2), draw(600, 3)


def accuracy(weight: torch.Tensor, bias: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = data
    return float(((x @ weight.T + bias).argmax(1) == y).float().mean())


def sklearn_fit(train, c: float, class_weight: str | None = None) -> LogisticRegression:
    """scikit-learn's L-BFGS logistic regression, converged tightly, on one BLAS thread (more threads on a
    shared 2-core machine made each fit take seconds)."""
    x, y = (t.numpy().astype(np.float64) for t in train)
    with threadpool_limits(1):
        return LogisticRegression(C=c, tol=1e-8, max_iter=5000, class_weight=class_weight).fit(x, y)


@pytest.mark.parametrize("c, standardize", [(1e-3, False), (0.1, False), (10.0, False), (0.1, True)],
                         ids=["C=1e-3", "C=0.1", "C=10", "C=0.1-standardized"])
def test_same_accuracy_and_probabilities_as_sklearn_at_the_same_regularisation(c: float, standardize: bool) -> None:
    """sklearn minimises C·Σ CE + ½‖W‖²; the probe mean CE + λ/2·‖W‖²: the same minimiser at λ = 1/(C·n)."""
    train, val, test = make_features(300)
    n = len(train[1])
    if standardize:  # the probe standardises on the training subset and folds the scaling back into its head
        mean, std = train[0].mean(0), train[0].std(0)
        ref = sklearn_fit(((train[0] - mean) / std, train[1]), c)
        ref_w, ref_b = torch.tensor(ref.coef_, dtype=torch.float32) / std, torch.tensor(ref.intercept_, dtype=torch.float32)
        ref_b = ref_b - ref_w @ mean
    else:
        ref = sklearn_fit(train, c)
        ref_w, ref_b = torch.tensor(ref.coef_, dtype=torch.float32), torch.tensor(ref.intercept_, dtype=torch.float32)
    fit = fit_probe(train, val, 6, ProbeOptions(l2=1.0 / (c * n), tol=1e-6, standardize=standardize))
    for split in (val, test):
        assert abs(accuracy(fit.weight, fit.bias, split) - accuracy(ref_w, ref_b, split)) <= 0.005
        ours = torch.softmax(split[0] @ fit.weight.T + fit.bias, 1)
        theirs = torch.softmax(split[0] @ ref_w.T + ref_b, 1)
        # weakly regularised (C=10: λ ≈ 3e-4) the optimum is flat: max |Δp| was 0.02 at max |gradient| ≤ 1e-6
        assert float((ours - theirs).abs().max()) < 3e-2
    assert fit.converged


@pytest.mark.parametrize("k, n, c", [(100, 1500, 0.01), (10, 10, 0.01), (10, 10, 1.0)],
                         ids=["100-classes", "one-per-class-C=0.01", "one-per-class-C=1"])
def test_many_classes_and_one_example_per_class_agree_with_sklearn(k: int, n: int, c: float) -> None:
    train, val, test = make_features(n, d=64, k=k)
    ref = sklearn_fit(train, c)
    ref_w, ref_b = torch.tensor(ref.coef_, dtype=torch.float32), torch.tensor(ref.intercept_, dtype=torch.float32)
    fit = fit_probe(train, val, k, ProbeOptions(l2=1.0 / (c * n), tol=1e-6))
    assert fit.weight.shape == (k, 64) and fit.converged
    for split in (val, test):
        assert abs(accuracy(fit.weight, fit.bias, split) - accuracy(ref_w, ref_b, split)) <= 0.005
    searched = fit_probe(train, val, k, ProbeOptions())  # the whole search runs on them too
    assert searched.converged


def test_balanced_class_weight_matches_sklearn_and_helps_the_rare_class() -> None:
    train, val, test = make_features(600, k=3, weights=[0.85, 0.1, 0.05], noise=1.5)
    n, c = len(train[1]), 0.01
    ref = sklearn_fit(train, c, class_weight="balanced")
    ref_w, ref_b = torch.tensor(ref.coef_, dtype=torch.float32), torch.tensor(ref.intercept_, dtype=torch.float32)
    fit = fit_probe(train, val, 3, ProbeOptions(l2=1.0 / (c * n), tol=1e-6, class_weight="balanced"))
    plain = fit_probe(train, val, 3, ProbeOptions(l2=1.0 / (c * n), tol=1e-6))
    for split in (val, test):
        assert abs(accuracy(fit.weight, fit.bias, split) - accuracy(ref_w, ref_b, split)) <= 0.005
    rare = test[1] == 2
    recall = {name: float(((test[0][rare] @ f.weight.T + f.bias).argmax(1) == 2).float().mean()) for name, f in
              (("balanced", fit), ("plain", plain))}
    assert recall["balanced"] > recall["plain"]


def test_the_solution_is_converged_and_warm_starts_reach_the_same_one() -> None:
    train, _, _ = make_features(300)
    x = train[0] - train[0].mean(0)
    problem = Problem.of(x, train[1], 6)
    for l2 in (1e3, 1e-2, 1e-4):
        cold = solve(problem, l2, tol=1e-5)
        warm = solve(problem, l2, start=solve(problem, l2 * 10, tol=1e-5), tol=1e-5)
        for sol in (cold, warm):
            _, g_weight, g_bias = objective(problem, sol.weight, sol.bias, l2)
            assert sol.converged and max(float(g_weight.abs().max()), float(g_bias.abs().max())) <= 1e-5
        assert float((torch.softmax(x @ cold.weight.T + cold.bias, 1) - torch.softmax(x @ warm.weight.T + warm.bias, 1)).abs().max()) < 1e-3


def test_the_gradient_is_the_objectives_own() -> None:
    train, _, _ = make_features(50, d=8, k=3)
    problem = Problem.of(train[0], train[1], 3, class_weight="balanced")
    weight = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    precise = problem.double()
    loss, g_weight, g_bias = objective(precise, weight.detach(), bias.detach(), 0.3)
    counts = torch.bincount(train[1], minlength=3).double()
    w = (len(train[1]) / (3 * counts))[train[1]]
    ce = torch.nn.functional.cross_entropy(train[0].double() @ weight.T + bias, train[1], reduction="none")
    reference = (w * ce).mean() + 0.15 * (weight * weight).sum()
    reference.backward()
    assert float(loss) == pytest.approx(float(reference.detach()), rel=1e-6)  # the weights were stored in float32
    torch.testing.assert_close(g_weight, weight.grad)
    torch.testing.assert_close(g_bias, bias.grad)


def test_the_strength_is_chosen_on_validation_over_the_grid_and_its_refinement() -> None:
    train, val, _ = make_features(120, noise=3.0)
    options = ProbeOptions()
    fit = fit_probe(train, val, 6, options)
    l2s = sorted(p.l2 for p in fit.curve)
    assert len(fit.curve) == options.grid + 2 * options.refine
    assert l2s[0] == pytest.approx(1e-6) and l2s[-1] == pytest.approx(1e5)
    best = max(fit.curve, key=lambda p: (p.val_acc, -p.val_loss, p.l2))
    assert fit.l2 == best.l2 and fit.val_acc == pytest.approx(accuracy(fit.weight, fit.bias, val))
    assert 1e-6 < fit.l2 < 1e5  # neither end of the range on these features
    summary = fit.summary()
    assert summary["l2"] == fit.l2 and [p["l2"] for p in summary["curve"]] == l2s and summary["solver_time_s"] > 0
    fixed = fit_probe(train, val, 6, ProbeOptions(l2=0.01))
    assert [p.l2 for p in fixed.curve] == [0.01]


def test_non_finite_features_and_bad_options_are_clear_errors() -> None:
    train, val, _ = make_features(60)
    bad = train[0].clone()
    bad[3, 5] = float("nan")
    with pytest.raises(DataError, match=r"train features hold 1 non-finite value.*trainer.precision=32-true"):
        fit_probe((bad, train[1]), val, 6, ProbeOptions())
    val_bad = val[0].clone()
    val_bad[0, 0] = float("inf")
    with pytest.raises(DataError, match=r"val features hold 1 non-finite"):
        fit_probe(train, (val_bad, val[1]), 6, ProbeOptions())
    with pytest.raises(DataError, match=r"no example of class\(es\) \[6\]"):
        fit_probe(train, val, 7, ProbeOptions())
    with pytest.raises(ConfigError, match=r"strategy.probe.l2_grid \(did you mean strategy.probe.grid\?\): not a key of strategy.probe"):
        ProbeOptions.from_config({"l2_grid": 3})
    with pytest.raises(ConfigError, match=r"class_weight='weighted' is unknown"):
        ProbeOptions.from_config({"class_weight": "weighted"})
    with pytest.raises(ConfigError, match=r"l2_range=\[1.0, 0.1\]"):
        ProbeOptions.from_config({"l2_range": [1.0, 0.1]})
