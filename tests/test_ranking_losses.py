"""The ranking and tolerant regression terms (pairwise, listnet, clipped-mse) against
independent float64 loops, their edge cases, and the inline ``W*term`` loss syntax."""

import math

import pytest
import torch
import torch.nn.functional as F

from humanclap.training.losses import (
    CLIPPED_MSE_TAU,
    LISTNET_TEMPERATURE,
    PAIRWISE_MARGIN,
    HumanClapLoss,
    clipped_mse,
    listnet,
    pairwise,
    parse_loss_spec,
)


def batch(n: int, seed: int, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    e_a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    e_t = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return e_a, e_t, torch.rand(n, generator=g, dtype=torch.float64)


def preds(e_a, e_t, clip):
    return [max(float(e_a[i] @ e_t[i]), 0.0) if clip else float(e_a[i] @ e_t[i]) for i in range(len(e_a))]


def ref_pairwise(p, t, margin, delta):
    hinges = [max(0.0, margin - (p[i] - p[j])) for i in range(len(p)) for j in range(len(p)) if t[i] - t[j] > delta]
    return sum(hinges) / len(hinges) if hinges else 0.0


def ref_listnet(p, t, temp):
    if len(set(t)) == 1:
        return 0.0
    zt = sum(math.exp(x / temp) for x in t)
    zp = sum(math.exp(x / temp) for x in p)
    return sum(
        math.exp(ti / temp) / zt * (math.log(math.exp(ti / temp) / zt) - math.log(math.exp(pi / temp) / zp))
        for ti, pi in zip(t, p)
    )


def ref_clipped_mse(p, t, tau):
    return sum((pi - ti) ** 2 if abs(pi - ti) > tau else 0.0 for pi, ti in zip(p, t)) / len(p)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_match_float64_loops(seed, clip):
    e_a, e_t, a = batch(9, seed)
    a[3] = a[5]  # a tie: neither (3, 5) nor (5, 3) is a ranked pair
    p, t = preds(e_a, e_t, clip), a.tolist()
    for margin, delta in ((PAIRWISE_MARGIN, 0.0), (0.2, 0.1)):
        got = pairwise(e_a, e_t, a, margin, delta, clip=clip)
        assert float(got) == pytest.approx(ref_pairwise(p, t, margin, delta), abs=1e-12)
    for temp in (LISTNET_TEMPERATURE, 0.1, 1.0):
        assert float(listnet(e_a, e_t, a, temp, clip=clip)) == pytest.approx(ref_listnet(p, t, temp), abs=1e-12)
    for tau in (CLIPPED_MSE_TAU, 0.0, 0.3):
        assert float(clipped_mse(e_a, e_t, a, tau, clip=clip)) == pytest.approx(ref_clipped_mse(p, t, tau), abs=1e-12)


def test_by_hand():
    # CLAPScores 1.0, 0.8, 0.0 (the -0.6 cosine clips), targets 0.9, 0.5, 0.2
    e_a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    e_t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]], dtype=torch.float64)
    a = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    # ranked pairs (0,1): 0.3-0.2 -> 0.1 hinge? margin 0.3: max(0, 0.3 - 0.2) = 0.1;
    # (0,2): max(0, 0.3 - 1.0) = 0; (1,2): max(0, 0.3 - 0.8) = 0
    assert float(pairwise(e_a, e_t, a, margin=0.3)) == pytest.approx(0.1 / 3)
    # errors 0.1, 0.3, 0.2: only 0.3 and 0.2 exceed tau 0.15
    assert float(clipped_mse(e_a, e_t, a, tau=0.15)) == pytest.approx((0.09 + 0.04) / 3)
    # listnet: predictions equal to targets up to a shift cost nothing
    e = torch.eye(3, dtype=torch.float64)
    assert float(
        listnet(
            e,
            e * torch.tensor([[0.9], [0.5], [0.2]], dtype=torch.float64),
            torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64),
        )
    ) == pytest.approx(0, abs=1e-15)


@pytest.mark.parametrize("n", [1, 6])
def test_equal_targets_and_a_batch_of_one_give_exactly_zero_and_finite_gradients(n):
    g = torch.Generator().manual_seed(4)
    raw_a = torch.randn(n, 4, generator=g, requires_grad=True)
    raw_t = torch.randn(n, 4, generator=g, requires_grad=True)
    a = torch.full((n,), 0.4)
    for fn in (pairwise, listnet):
        raw_a.grad = raw_t.grad = None
        out = fn(F.normalize(raw_a, dim=-1), F.normalize(raw_t, dim=-1), a)
        assert out.item() == 0.0 and not math.isnan(out.item())
        out.backward()
        assert torch.equal(raw_a.grad, torch.zeros_like(raw_a)) and torch.isfinite(raw_t.grad).all()
    out = clipped_mse(F.normalize(raw_a, dim=-1), F.normalize(raw_t, dim=-1), a)
    assert torch.isfinite(out)


def test_gradients_finite_in_every_combination():
    g = torch.Generator().manual_seed(1)
    raw_a = torch.randn(6, 4, generator=g, requires_grad=True)
    raw_t = torch.randn(6, 4, generator=g, requires_grad=True)
    a = torch.rand(6, generator=g)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    for spec in ["wsce+mae+0.5*pairwise", "listnet", "clipped-mse+pairwise", "mae+listnet+2*clipped-mse"]:
        raw_a.grad = raw_t.grad = None
        out = HumanClapLoss(spec)(
            F.normalize(raw_a, dim=-1),
            F.normalize(raw_t, dim=-1),
            a,
            logit_scale=torch.tensor(14.0),
            text_ids=ids,
            audio_ids=ids,
        )
        out["loss"].backward()
        assert torch.isfinite(raw_a.grad).all() and torch.isfinite(raw_t.grad).all()
        assert raw_a.grad.abs().sum() > 0


def test_module_weights_inline_terms_and_passes_settings():
    e_a, e_t, a = batch(8, 7)
    loss = HumanClapLoss(
        "mae+0.5*pairwise+2*clipped-mse+listnet", margin=0.2, delta=0.05, tau=0.1, listnet_temperature=0.3
    )
    out = loss(e_a, e_t, a)
    assert float(out["pairwise"]) == float(pairwise(e_a, e_t, a, 0.2, 0.05))
    assert float(out["clipped-mse"]) == float(clipped_mse(e_a, e_t, a, 0.1))
    assert float(out["listnet"]) == float(listnet(e_a, e_t, a, 0.3))
    assert float(out["loss"]) == pytest.approx(
        float(out["mae"]) + 0.5 * float(out["pairwise"]) + 2 * float(out["clipped-mse"]) + float(out["listnet"])
    )


@pytest.mark.parametrize(
    "spec,weights,expected",
    [
        ("wsce+mae+0.5*pairwise", None, {"wsce": 1.0, "mae": 1.0, "pairwise": 0.5}),
        ("2*wsce + 1e+0*mae", None, {"wsce": 2.0, "mae": 1.0}),
        ("WSCE+MAE", "0.5,2", {"wsce": 0.5, "mae": 2.0}),  # the old form, unchanged
        ("listnet+clipped-mse", "", {"listnet": 1.0, "clipped-mse": 1.0}),
    ],
)
def test_parse_inline_weights(spec, weights, expected):
    assert parse_loss_spec(spec, weights) == expected


@pytest.mark.parametrize(
    "spec,weights,match",
    [
        ("wsce+0.5*mae", "1,1", "inline .* not both"),
        ("x*mae", None, "WEIGHT\\*TERM"),
        ("0.5*foo", None, "not understood"),
        ("-1*mae", None, ">= 0"),
        ("0.5*mae+mae", None, "twice"),
    ],
)
def test_parse_refusals(spec, weights, match):
    with pytest.raises(ValueError, match=match):
        parse_loss_spec(spec, weights)
