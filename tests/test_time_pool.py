"""The periodic sum pool: it counts (a sum, unlike attention's weighted mean), ignores
padding, reads each token's age in days through learnable periodic encodings."""

from __future__ import annotations

import math

import torch

from valuerec.features.sequences import NUMERIC
from valuerec.nn.time_pool import DEFAULT_PERIODS, PeriodicSumPool

AGE = NUMERIC.index("log_age_days")


def _tokens(ages: list[float], length: int = 6) -> tuple[torch.Tensor, ...]:
    """One customer: purchase tokens (event type 2) at ``ages`` days, right-aligned."""
    n = len(ages)
    event = torch.zeros(1, length, dtype=torch.long)
    numeric = torch.zeros(1, length, len(NUMERIC))
    mask = torch.zeros(1, length, dtype=torch.bool)
    event[0, length - n :] = 2
    numeric[0, length - n :, AGE] = torch.log1p(torch.tensor(ages))
    mask[0, length - n :] = True
    return event, numeric, mask


def _pool() -> PeriodicSumPool:
    torch.manual_seed(0)
    return PeriodicSumPool(4, len(NUMERIC), AGE).eval()


def test_pool_sums_tokens_rather_than_averaging():
    pool = _pool()
    with torch.no_grad():
        one = pool(*_tokens([40.0]))
        three = pool(*_tokens([40.0, 40.0, 40.0]))
    # signed log of 3x the single token's sum; a mean would give ``one`` back
    expected = torch.sign(one) * torch.log1p(3 * torch.expm1(one.abs()))
    torch.testing.assert_close(three, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(three, one)


def test_padding_is_ignored_whatever_it_holds():
    pool = _pool()
    event, numeric, mask = _tokens([5.0, 200.0])
    noisy = numeric.clone()
    noisy[0, :4] = torch.randn(4, len(NUMERIC)) * 10  # garbage in the padded slots
    event2 = event.clone()
    event2[0, :4] = 3
    with torch.no_grad():
        torch.testing.assert_close(pool(event, numeric, mask), pool(event2, noisy, mask))


def test_frequencies_start_at_the_calendar_periods_and_learn():
    pool = _pool()
    torch.testing.assert_close(
        pool.frequency.detach(), torch.tensor([2 * math.pi / p for p in DEFAULT_PERIODS])
    )
    out = pool(*_tokens([30.0, 365.0])).sum()
    out.backward()
    assert pool.frequency.grad is not None and pool.frequency.grad.abs().sum() > 0


def test_ages_a_whole_number_of_periods_apart_look_alike_in_phase():
    # with every period set to a year, a token a year older differs only through its
    # numeric features (log age), not its phase; one half a year older differs in phase too
    pool = PeriodicSumPool(4, len(NUMERIC), AGE, periods=[365.25] * 3)
    with torch.no_grad():
        # read the phase (sin and cos of 3 periods) and the event type only
        pool.token[0].weight[:, 2 * 3 + pool.event_type.embedding_dim :] = 0
        base = pool(*_tokens([20.0]))
        year = pool(*_tokens([20.0 + 365.25]))
        half = pool(*_tokens([20.0 + 182.625]))
    torch.testing.assert_close(base, year, rtol=1e-4, atol=1e-5)
    assert (base - half).abs().max() > 1e-3
