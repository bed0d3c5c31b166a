"""Losses against hand-computed values and a naive double-loop reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from humanclap.training.losses import HumanClapLoss, mae, mse, parse_loss_spec, same_item_mask, wsce

# Three pairs in 2-D with simple cosines: pair 0: 1.0, pair 1: 0.8, pair 2: -0.6.
E_A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
E_T = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]], dtype=torch.float64)
A = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)


def test_mae_mse_by_hand():
    # CLAPScores 1.0, 0.8, 0.0 (the -0.6 cosine clips to 0)
    assert float(mae(E_A, E_T, A)) == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    assert float(mse(E_A, E_T, A)) == pytest.approx((0.01 + 0.09 + 0.04) / 3)
    # raw cosine regression: the third pair predicts -0.6
    assert float(mae(E_A, E_T, A, clip=False)) == pytest.approx((0.1 + 0.3 + 0.8) / 3)
    assert float(mse(E_A, E_T, A, clip=False)) == pytest.approx((0.01 + 0.09 + 0.64) / 3)


def test_clip_kills_gradient_of_negative_cosines():
    e_t = E_T.clone().requires_grad_(True)
    mae(E_A, e_t, A).backward()
    assert torch.all(e_t.grad[2] == 0) and torch.any(e_t.grad[0:2] != 0)
    e_t.grad = None
    mae(E_A, e_t, A, clip=False).backward()
    assert torch.any(e_t.grad[2] != 0)


def _lse(values):
    return math.log(sum(math.exp(v) for v in values))


def test_wsce_by_hand_tau_1():
    # S[i][j] = e_t[i] . e_a[j]
    s = [[1.0, 0.0, -1.0], [0.6, 0.8, -0.6], [0.6, -0.8, -0.6]]
    t2a = [s[i][i] - _lse(s[i]) for i in range(3)]
    a2t = [s[i][i] - _lse([s[j][i] for j in range(3)]) for i in range(3)]
    a = [0.9, 0.5, 0.2]
    expected = -sum(a[i] * (t2a[i] + a2t[i]) for i in range(3)) / (2 * 3)
    assert float(wsce(E_A, E_T, A, 1.0)) == pytest.approx(expected, abs=1e-12)
    expected_w = expected * 3 / sum(a)
    assert float(wsce(E_A, E_T, A, 1.0, normalize="weights")) == pytest.approx(expected_w, abs=1e-12)
    # masking pairs 0 and 1 (same text): row 0 and row 1 lose each other's column
    t2a_m = [s[0][0] - _lse([s[0][0], s[0][2]]), s[1][1] - _lse([s[1][1], s[1][2]]), t2a[2]]
    a2t_m = [s[0][0] - _lse([s[0][0], s[2][0]]), s[1][1] - _lse([s[1][1], s[2][1]]), a2t[2]]
    expected_m = -sum(a[i] * (t2a_m[i] + a2t_m[i]) for i in range(3)) / 6
    got = wsce(E_A, E_T, A, 1.0, text_ids=torch.tensor([7, 7, 3]))
    assert float(got) == pytest.approx(expected_m, abs=1e-12)


def naive_wsce(e_a, e_t, a, scale, text_ids, audio_ids, normalize="n"):
    n = len(a)

    def negative(i, j):
        return j == i or (text_ids[i] != text_ids[j] and audio_ids[i] != audio_ids[j])

    total = 0.0
    for i in range(n):
        t_row = [scale * float(e_t[i] @ e_a[j]) for j in range(n) if negative(i, j)]
        a_row = [scale * float(e_a[i] @ e_t[j]) for j in range(n) if negative(i, j)]
        pos = scale * float(e_t[i] @ e_a[i])
        total += float(a[i]) * ((pos - _lse(t_row)) + (pos - _lse(a_row)))
    z = n if normalize == "n" else float(sum(a))
    return -total / (2 * z)


@pytest.mark.parametrize("normalize", ["n", "weights"])
def test_wsce_matches_naive_loop_with_shared_items(normalize):
    g = torch.Generator().manual_seed(0)
    n, d = 9, 5
    e_a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    e_t = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    a = torch.rand(n, generator=g, dtype=torch.float64)
    text_ids = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 4])  # texts rated with ~3 audios
    audio_ids = torch.tensor([10, 11, 12, 13, 10, 14, 15, 16, 17])  # audio 10 has two texts
    got = wsce(e_a, e_t, a, 14.3, text_ids, audio_ids, normalize=normalize)
    ref = naive_wsce(e_a, e_t, a, 14.3, text_ids.tolist(), audio_ids.tolist(), normalize)
    assert float(got) == pytest.approx(ref, abs=1e-10)
    # without ids nothing is masked: equals the naive loop with all-distinct ids
    got = wsce(e_a, e_t, a, 14.3, normalize=normalize)
    ref = naive_wsce(e_a, e_t, a, 14.3, list(range(n)), list(range(n)), normalize)
    assert float(got) == pytest.approx(ref, abs=1e-10)


def test_regression_terms_match_naive_loops():
    g = torch.Generator().manual_seed(3)
    e_a = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=-1)
    e_t = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=-1)
    a = torch.rand(7, generator=g, dtype=torch.float64)
    for clip in (True, False):
        pred = [max(float(e_a[i] @ e_t[i]), 0.0) if clip else float(e_a[i] @ e_t[i]) for i in range(7)]
        assert float(mae(e_a, e_t, a, clip)) == pytest.approx(sum(abs(p - float(y)) for p, y in zip(pred, a)) / 7)
        assert float(mse(e_a, e_t, a, clip)) == pytest.approx(sum((p - float(y)) ** 2 for p, y in zip(pred, a)) / 7)


def test_mask_marks_shared_texts_and_audios_only():
    m = same_item_mask(torch.tensor([0, 0, 1]), torch.tensor([5, 6, 5]), 3)
    assert m.tolist() == [[False, True, True], [True, False, False], [True, False, False]]


def test_logit_scale_clamped_and_learnable():
    raw = torch.tensor(math.log(1000.0), requires_grad=True)
    a = wsce(E_A, E_T, A, raw.exp())
    b = wsce(E_A, E_T, A, 100.0)
    assert float(a.detach()) == pytest.approx(float(b))
    small = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    wsce(E_A, E_T, A, small.exp()).backward()
    assert small.grad is not None and torch.isfinite(small.grad)


def test_gradients_finite_for_every_combination():
    g = torch.Generator().manual_seed(1)
    raw_a = torch.randn(6, 4, generator=g, requires_grad=True)
    raw_t = torch.randn(6, 4, generator=g, requires_grad=True)
    a = torch.rand(6, generator=g)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    for spec in ["wsce+mae", "mae", "wsce+mse", "mse+mae", "wsce+mse+mae", "wsce", "mse"]:
        raw_a.grad = raw_t.grad = None
        out = HumanClapLoss(spec)(
            F.normalize(raw_a, dim=-1),
            F.normalize(raw_t, dim=-1),
            a,
            logit_scale=torch.tensor(14.0),
            text_ids=ids,
            audio_ids=ids,
        )
        assert set(out) == {"loss", *spec.split("+")}
        out["loss"].backward()
        assert torch.isfinite(raw_a.grad).all() and torch.isfinite(raw_t.grad).all()


def test_weighted_combination():
    loss = HumanClapLoss("wsce+mae", "0.5,2")
    out = loss(E_A, E_T, A, logit_scale=1.0)
    assert float(out["loss"]) == pytest.approx(0.5 * float(out["wsce"]) + 2 * float(out["mae"]))


@pytest.mark.parametrize(
    "spec,weights", [("wsce+foo", None), ("mae+mae", None), ("", None), ("wsce+mae", "1"), ("mae", "x"), ("mae", "-1")]
)
def test_bad_specs_say_what_to_do(spec, weights):
    with pytest.raises(ValueError, match="loss|weight"):
        parse_loss_spec(spec, weights)


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        mae(E_A, E_T[:2], A)
    with pytest.raises(ValueError, match="one per pair"):
        mse(E_A, E_T, A[:2])


def test_docstring_examples_run():
    import doctest

    import humanclap.training.losses as losses

    result = doctest.testmod(losses, verbose=False)
    assert result.failed == 0 and result.attempted >= 1, result


def test_predicted_score_is_the_one_clapscore():
    from humanclap.scoring.clap.scorer import clapscore
    from humanclap.training.losses import predicted_score

    cos = torch.tensor([-0.5, 0.0, 0.3], dtype=torch.float64, requires_grad=True)
    got = predicted_score(cos)
    assert got.dtype == torch.float64 and got.tolist() == [0.0, 0.0, 0.3]
    assert torch.equal(got, clapscore(cos)) and got.requires_grad  # stays in the graph
    assert clapscore([-0.5, 0.3]).tolist() == pytest.approx([0.0, 0.3])  # numpy path unchanged
    assert predicted_score(cos, clip=False) is cos
