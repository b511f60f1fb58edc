"""Sweeps of hac.lorentz against a 50-digit mpmath oracle and geoopt (issue 2)."""
import math

import geoopt
import mpmath as mp
import numpy as np
import pytest
import torch

from hac.lorentz import (dist0, exp_map0, from_poincare, half_aperture, log_map0, oxy_angle,
                         pairwise_dist, poincare_dist, rowwise_dist, rowwise_inner, time_component,
                         to_poincare, entailment_loss)

mp.mp.dps = 50
CURVS = [0.1, 0.3, 1.0, 3.0, 10.0]


def rand_points(n, d, rng, lo=-6, hi=3, dtype=torch.float64):
    "Random directions with space norms log-uniform in [10**lo, 10**hi]."
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = 10 ** rng.uniform(lo, hi, size=(n, 1))
    return torch.tensor(u * r, dtype=dtype)


def mp_vec(x):
    return [mp.mpf(float(v)) for v in x]


def mp_dist(x, y, c):
    "Oracle: d = acosh(-c <x, y>_L) / sqrt(c) at 50 digits, via the stable form 2 asinh(sqrt(cE/2))."
    c = mp.mpf(c)
    x, y = mp_vec(x), mp_vec(y)
    nx2, ny2 = mp.fsum(a * a for a in x), mp.fsum(b * b for b in y)
    xy = mp.fsum(a * b for a, b in zip(x, y))
    e = mp.sqrt(1 / c + nx2) * mp.sqrt(1 / c + ny2) - xy - 1 / c
    return float(2 * mp.asinh(mp.sqrt(max(c * e / 2, 0))) / mp.sqrt(c))


def mp_ext(x, y, c):
    "Oracle: MERU's exterior angle, acos formula at 50 digits."
    c = mp.mpf(c)
    x, y = mp_vec(x), mp_vec(y)
    xt = mp.sqrt(1 / c + mp.fsum(a * a for a in x))
    yt = mp.sqrt(1 / c + mp.fsum(b * b for b in y))
    cxyl = c * (mp.fsum(a * b for a, b in zip(x, y)) - xt * yt)
    num = yt + xt * cxyl
    den = mp.sqrt(mp.fsum(a * a for a in x)) * mp.sqrt(cxyl**2 - 1)
    return float(mp.acos(max(min(num / den, 1), -1)))


def mp_aper(x, c, K=0.1):
    u = 2 * K / (mp.sqrt(mp.mpf(c)) * mp.sqrt(mp.fsum(a * a for a in mp_vec(x))))
    return float(mp.asin(min(u, 1)))


def ambient(x, c):
    return torch.cat([time_component(x, curv=c)[:, None], x], -1)


@pytest.mark.parametrize("c", CURVS)
def test_float64_against_oracles(c):
    rng = np.random.default_rng(int(c * 100))
    x, y = rand_points(60, 8, rng), rand_points(60, 8, rng)
    ref = np.array([mp_dist(a, b, c) for a, b in zip(x, y)])
    for got in (rowwise_dist(x, y, curv=c), pairwise_dist(x, y, curv=c).diagonal()):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=0)
    # geoopt (k = 1/c): its clamped acosh is inaccurate for small distances (off by up to 5e-5 at
    # d ~ 1e-9, where the mpmath oracle above agrees with us), so compare where sqrt(c) d > 1
    g = geoopt.Lorentz(k=1 / c).dist(ambient(x, c), ambient(y, c)).numpy()
    ours = rowwise_dist(x, y, curv=c).numpy()
    far = math.sqrt(c) * ref > 1
    assert far.sum() > 20
    np.testing.assert_allclose(ours[far], g[far], rtol=1e-6)
    # distance to origin, exp/log maps at tiny and large norms
    r = torch.tensor([float(mp.asinh(mp.sqrt(c) * mp.norm(mp_vec(a))) / mp.sqrt(c)) for a in x], dtype=torch.float64)
    np.testing.assert_allclose(dist0(x, curv=c).numpy(), r.numpy(), rtol=1e-12)
    v = log_map0(x, curv=c)
    np.testing.assert_allclose(v.norm(dim=-1).numpy(), r.numpy(), rtol=1e-12)
    np.testing.assert_allclose(exp_map0(v, curv=c).numpy(), x.numpy(), rtol=1e-10, atol=0)
    # exp map vs mpmath: sinh(sqrt(c)|v|)/(sqrt(c)|v|) v
    tv = rand_points(30, 8, rng, lo=-6, hi=math.log10(10 / math.sqrt(c)))
    for row, out in zip(tv, exp_map0(tv, curv=c)):
        n = mp.norm(mp_vec(row)) * mp.sqrt(c)
        np.testing.assert_allclose(out.numpy(), (float(mp.sinh(n) / n) * row).numpy(), rtol=1e-12)


@pytest.mark.parametrize("c", CURVS)
def test_float32_pairwise(c):
    rng = np.random.default_rng(7 + int(c * 10))
    x, y = rand_points(40, 16, rng, dtype=torch.float32), rand_points(50, 16, rng, dtype=torch.float32)
    # add near-duplicates so the small-distance regime is exercised
    y[:10] = x[:10] * (1 + 1e-4)
    got = pairwise_dist(x, y, curv=c).double().numpy()
    ref = np.array([[mp_dist(a, b, c) for b in y] for a in x])
    big = math.sqrt(c) * ref > 0.1
    rel = np.abs(got - ref) / np.maximum(ref, 1e-300)
    assert rel[big].max() < 1e-4, rel[big].max()
    assert np.abs(got - ref)[~big].max(initial=0) < 2e-3 / math.sqrt(c)
    # same with autograd on (out-of-place path)
    xg = x.clone().requires_grad_(True)
    got2 = pairwise_dist(xg, y, curv=c).detach().double().numpy()
    assert (np.abs(got2 - ref) / np.maximum(ref, 1e-300))[big].max() < 1e-4


@pytest.mark.parametrize("c", [0.37, 1.0])
def test_pairwise_cluster_at_origin_bounded_memory(c, monkeypatch):
    """Every pair near (points clustered at the origin, as early in training): the refinement runs in chunks of
    pairs. Before, it gathered all B*N pairs at once: 4096 x 4096 x 512 points of norm ~0.2 asked for 30 GB."""
    import hac.lorentz as L
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 64, generator=g) * 2e-3, torch.randn(200, 64, generator=g) * 2e-3
    calls = []
    rowwise = L.rowwise_dist
    monkeypatch.setattr(L, "rowwise_dist", lambda a, b, **k: calls.append(len(a)) or rowwise(a, b, **k))
    monkeypatch.setattr(L, "_CHUNK_FLOATS", 64 * 7000)      # chunks of 7,000 pairs
    got = pairwise_dist(x, y, curv=c)
    assert sum(calls) == 300 * 200 and max(calls) == 7000 and len(calls) == 9   # every pair near, in chunks
    monkeypatch.setattr(L, "_CHUNK_FLOATS", 1 << 40)
    assert torch.equal(got, pairwise_dist(x, y, curv=c))     # one chunk: the same bits
    ref = pairwise_dist(x.double(), y.double(), curv=c)
    assert ((got.double() - ref).abs() / ref).max() < 1e-5


def lorentz_geodesic(x, d, c, rng):
    "A float64 point at distance d from x along a random direction (ambient exp map at x)."
    xa = ambient(x[None], c)[0]
    w = torch.tensor(rng.standard_normal(xa.shape[0]), dtype=torch.float64)
    ip = lambda a, b: (a[1:] * b[1:]).sum() - a[0] * b[0]
    u = w + c * ip(xa, w) * xa  # project onto the tangent space at x
    u = u / ip(u, u).sqrt()
    sc = math.sqrt(c)
    return (math.cosh(sc * d) * xa + math.sinh(sc * d) / sc * u)[1:]


@pytest.mark.parametrize("c", CURVS)
def test_float32_rowwise_nearby(c):
    rng = np.random.default_rng(11 + int(c * 10))
    xs = rand_points(60, 8, rng, lo=-3, hi=3)
    ds = 10 ** rng.uniform(-3, 0, size=60)
    ys = torch.stack([lorentz_geodesic(a, d, c, rng) for a, d in zip(xs, ds)])
    x32, y32 = xs.float(), ys.float()
    ref = np.array([mp_dist(a, b, c) for a, b in zip(x32, y32)])  # oracle on the rounded inputs
    got = rowwise_dist(x32, y32, curv=c).double().numpy()
    ok = ref >= 1e-3
    rel = np.abs(got - ref)[ok] / ref[ok]
    assert rel.max() < 1e-5, rel.max()  # spec: 1e-4; measured ~5e-7


@pytest.mark.parametrize("c", CURVS)
def test_float32_cones(c):
    rng = np.random.default_rng(3 + int(c * 10))
    x, y = rand_points(80, 8, rng, lo=-3, hi=2, dtype=torch.float32), rand_points(80, 8, rng, lo=-3, hi=2, dtype=torch.float32)
    ext = oxy_angle(x, y, curv=c).double().numpy()
    ref = np.array([mp_ext(a, b, c) for a, b in zip(x, y)])
    assert np.abs(ext - ref).max() < 2e-4
    ap = half_aperture(x, curv=c).double().numpy()
    assert np.abs(ap - np.array([mp_aper(a, c) for a in x])).max() < 2e-4


def test_identities():
    rng = np.random.default_rng(0)
    for c in CURVS:
        x = rand_points(30, 6, rng, lo=-4, hi=2)
        d = pairwise_dist(x, x, curv=c)
        np.testing.assert_allclose(d.numpy(), d.T.numpy(), rtol=1e-12, atol=1e-12)
        assert d.diagonal().abs().max() < 1e-12
        # triangle inequality on all triples
        tri = d[:, :, None] + d[None, :, :] - d[:, None, :].transpose(1, 2)
        assert tri.min() > -1e-9 * d.max()
        # hyperboloid constraint, relative to the scale of the terms
        np.testing.assert_allclose(rowwise_inner(x, x, curv=c).numpy(), -1 / c, rtol=0, atol=1e-12 * (1 + c * x.norm(dim=-1).max().item() ** 2))
        # Poincare round trip and equal distances
        p = to_poincare(x, curv=c)
        assert (p.norm(dim=-1) < 1 / math.sqrt(c)).all()
        np.testing.assert_allclose(from_poincare(p, curv=c).numpy(), x.numpy(), rtol=1e-9, atol=1e-15)
        y = rand_points(30, 6, rng, lo=-4, hi=1)
        np.testing.assert_allclose(poincare_dist(p, to_poincare(y, curv=c), curv=c).numpy(),
                                   rowwise_dist(x, y, curv=c).numpy(), rtol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_values_and_gradients(dtype):
    "Any tangent vector a user can produce: zeros, identical points, tiny and huge norms."
    v = torch.tensor([[0.0, 0.0, 0.0], [1e-30, 0, 0], [1e-3, 2e-3, 0], [3.0, -4.0, 1.0],
                      [1e3, 0, 0], [1e8, 1e8, 1e8], [1e30, -1e30, 0]], dtype=dtype)
    vg = v.clone().requires_grad_(True)
    c = torch.tensor(1.7, dtype=dtype, requires_grad=True)
    x = exp_map0(vg, curv=c)
    y = exp_map0(vg.flip(0), curv=c)
    outs = [x, log_map0(x, curv=c), dist0(x, curv=c), pairwise_dist(x, x, curv=c), pairwise_dist(x, y, curv=c),
            rowwise_dist(x, x, curv=c), rowwise_dist(x, y, curv=c), half_aperture(x, curv=c),
            oxy_angle(x, x, curv=c), oxy_angle(x, y, curv=c), entailment_loss(x, y, curv=c)[None],
            poincare_dist(to_poincare(x, curv=c), to_poincare(y, curv=c), curv=c)]
    for o in outs:
        assert torch.isfinite(o).all(), o
    sum(o.sum() for o in outs).backward()
    assert torch.isfinite(vg.grad).all() and torch.isfinite(c.grad).all()


def test_bad_curvature():
    x = torch.zeros(2, 3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            pairwise_dist(x, x, curv=bad)
    with pytest.raises(ValueError, match="positive"):
        dist0(x, curv=torch.tensor(-2.0))


def test_half_precision_runs_in_float32():
    x = torch.randn(4, 8).to(torch.bfloat16)
    assert pairwise_dist(x, x, curv=1.0).dtype == torch.float32


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
def test_poincare_ball_helpers(c):
    "Pairwise ball distances equal Lorentz distances; r(exp0(v)) = |v|; agree with to_poincare(exp_map0(v))."
    from hac.lorentz import MAX_SINH_ARG, poincare_dist0, poincare_exp_map0, poincare_pairwise_dist
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 4, generator=g, dtype=torch.float64) * 2, torch.randn(5, 4, generator=g, dtype=torch.float64)
    px, py = to_poincare(x, curv=c), to_poincare(y, curv=c)
    np.testing.assert_allclose(poincare_pairwise_dist(px, py, curv=c).numpy(), pairwise_dist(x, y, curv=c).numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(poincare_dist0(px, curv=c).numpy(), dist0(x, curv=c).numpy(), rtol=1e-10)
    v = torch.randn(6, 4, generator=g, dtype=torch.float64) * 3
    v[0] *= 13 / math.sqrt(c) / v[0].norm()                  # one vector far out: sqrt(c)|v| = 13 > asinh(2**15) = 11.09
    np.testing.assert_allclose(poincare_dist0(poincare_exp_map0(v, curv=c), curv=c).numpy(), v.norm(dim=-1).numpy(), rtol=1e-7)  # near the rim the gap 1-c|p|^2 ~ 1e-8 costs digits
    below = math.sqrt(c) * v.norm(dim=-1) < MAX_SINH_ARG     # exp_map0 saturates beyond; the ball's map does not
    assert below.any() and not below.all()
    np.testing.assert_allclose(poincare_exp_map0(v[below], curv=c).numpy(),
                               to_poincare(exp_map0(v[below], curv=c), curv=c).numpy(), atol=1e-12)


def test_poincare_pairwise_large_in_row_blocks():
    """2048 x 2048 features of 256 dims: one (B, N, D) difference tensor would be 4 GiB; row blocks of 64 MiB give the
    Lorentz distances (float64 oracle) and never hold more than a block."""
    from hac.lorentz import poincare_pairwise_dist, _PAIR_FLOATS
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(2048, 256, generator=g) * 0.1, torch.randn(2048, 256, generator=g) * 0.1
    assert 2048 * 2048 * 256 > 50 * _PAIR_FLOATS                            # many blocks
    got = poincare_pairwise_dist(to_poincare(x, curv=1.0), to_poincare(y, curv=1.0), curv=1.0)
    ref = pairwise_dist(x.double(), y.double(), curv=1.0)
    assert ((got.double() - ref).abs() / ref).max() < 1e-5
