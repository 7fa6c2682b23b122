"""dwp_lib.train: the one optimisation loop, its schedule and its checks."""

from __future__ import annotations

import math

import pytest
import torch

from dwp_lib.train import NonFiniteLossError, fit, linear_decay, take_step


@pytest.mark.parametrize("exact_ratio", [False, True])
def test_linear_decay_never_zero_before_the_last_step(exact_ratio):
    total = 7
    factors = [linear_decay(s, total, exact_ratio) for s in range(total)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(1 / total)
    assert all(f > 0 for f in factors)
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))
    with pytest.raises(ValueError):
        linear_decay(total, total, exact_ratio)


def test_the_two_forms_of_the_decay_agree_to_one_rounding():
    for s in range(1000):
        assert math.isclose(linear_decay(s, 1000), linear_decay(s, 1000, True), rel_tol=1e-15)
    assert any(linear_decay(s, 1000) != linear_decay(s, 1000, True) for s in range(1000))


def test_fit_minimises_applies_the_schedule_to_every_group_and_records_each_step():
    a, b = torch.tensor([3.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    seen = []
    log = fit(
        [{"params": [a]}, {"params": [b], "lr": 0.05}],
        lambda step: (a**2).sum() + (b**2).sum(),
        steps=200,
        lr=0.1,
        what="quadratic",
        schedule=lambda t: linear_decay(t, 200),
        after_step=lambda step, loss: seen.append(step),
    )
    assert seen == list(range(200)) and len(log.loss) == len(log.lr) == 200
    assert log.lr[0] == 0.1 and log.lr[-1] == pytest.approx(0.1 / 200)
    assert log.loss[-1] < 0.01 * log.loss[0] and log.seconds > 0


def test_fit_equals_the_hand_written_loop_bit_for_bit():
    def run(by_hand: bool) -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        x, y = torch.randn(16, 4), torch.randn(16, 2)

        def loss_at(step):
            return ((net(x) - y) ** 2).mean()

        if by_hand:
            opt = torch.optim.Adam(net.parameters(), lr=0.01)
            for t in range(20):
                opt.param_groups[0]["lr"] = 0.01 * linear_decay(t, 20)
                take_step(opt, loss_at(t))
        else:
            fit(net.parameters(), loss_at, 20, 0.01, "linear", lambda t: linear_decay(t, 20))
        return net.weight.detach()

    assert torch.equal(run(True), run(False))


def test_fit_stops_at_a_non_finite_loss_and_names_the_step():
    w = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(NonFiniteLossError, match=r"my stage: the loss is nan at step 4"):
        fit(
            [w],
            lambda t: w.sum() * (math.nan if t == 4 else 1.0),
            10,
            0.1,
            "my stage",
            first_step=1,
        )


def test_one_history_records_named_terms_and_says_what_it_lacks():
    from dwp_lib.train import History

    h = History(seed=3)
    h.record(nll=2.0, kl=10.0)
    h.record(nll=1.5, kl=9.0)
    h.loss += [12.0, 10.5]
    assert h.nll == [2.0, 1.5] and h.kl == [10.0, 9.0] and h.steps == 2
    with pytest.raises(AttributeError, match=r"no 'elbo' \(it records \['kl', 'nll'\]\)"):
        h.elbo  # noqa: B018
