"""The image-metadata interaction dial of the simulated metadata."""
import numpy as np
import pytest
import torch

from ctcbook.data.metadata import MetadataSimulator

GROUPS = [[0, 2, 4, 6]]


def _images(n=800, k=10, seed=0):
    """Class-dependent random grey images (N, 1, 16, 16) uint8 with labels: blobs whose brightness depends on the
    class, so the image carries class information but nothing about metadata."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    base = 40 + 15 * y.float()[:, None, None, None]
    x = (base + 30 * torch.rand(n, 1, 16, 16, generator=g)).round().clamp(0, 255).to(torch.uint8)
    return x, y.numpy()


def _within_class_correlation(sim, images, labels, latent):
    """Mean over classes of |corr(<image, P_g>, s_k(m))| within the class: ~0 when the image does not depend on the
    metadata given the class."""
    s = sim.signal(labels, latent.latitude, latent.day_of_year)
    g = sim._group
    x = images.float().numpy()[:, 0]
    out = []
    for k in range(sim.num_classes):
        sel = labels == k
        proj = (x[sel] * sim.pattern(int(g[k]), x.shape[1:])).sum((1, 2))
        out.append(abs(np.corrcoef(proj, s[sel])[0, 1]))
    return float(np.mean(out))


def test_interaction_zero_is_todays_simulation():
    y = np.arange(500) % 10
    today = MetadataSimulator(10, seed=3, missing_fraction=0.1).sample(y, 4)
    dial = MetadataSimulator(10, seed=3, missing_fraction=0.1, interaction=0.0, groups=GROUPS).sample(y, 4)
    for name in ("latitude", "longitude", "day_of_year", "days_in_year", "valid"):
        np.testing.assert_array_equal(getattr(today, name), getattr(dial, name))
    # Rendering at 0 hands back the very same images.
    x, _ = _images(20)
    sim = MetadataSimulator(10, interaction=0.0)
    assert sim.render(x, y[:20], sim.latent(y[:20])) is x
    # The sample with interaction > 0 is the same draw too (only the images change).
    hi = MetadataSimulator(10, seed=3, missing_fraction=0.1, interaction=1.0, groups=GROUPS).sample(y, 4)
    np.testing.assert_array_equal(today.day_of_year, hi.day_of_year)


def test_latent_keeps_hidden_locations():
    y = np.arange(300) % 10
    sim = MetadataSimulator(10, missing_fraction=0.3)
    seen, latent = sim.sample(y, 0), sim.latent(y, 0)
    assert (~seen.valid).sum() > 30 and latent.valid.all() and np.isfinite(latent.latitude).all()
    np.testing.assert_array_equal(seen.latitude[seen.valid], latent.latitude[seen.valid])


def test_image_independent_of_metadata_given_class_only_at_zero():
    x, y = _images()
    stats = {}
    for a in (0.0, 0.8):
        sim = MetadataSimulator(10, seed=0, interaction=a, groups=GROUPS)
        latent = sim.latent(y, 0)
        stats[a] = _within_class_correlation(sim, sim.render(x, y, latent), y, latent)
    # 80 images per class: |r| of independent variables is ~ 1/sqrt(80) = 0.11.
    assert stats[0.0] < 0.2
    assert stats[0.8] > 0.6


def test_group_members_see_the_same_stripes_at_different_seasons():
    sim = MetadataSimulator(10, interaction=1.0, groups=GROUPS)
    lat = np.full(4, 45.0)
    day = np.full(4, 172.0)
    s = sim.signal(np.array([0, 2, 4, 6]), lat, day)
    np.testing.assert_allclose(s, np.cos(-2 * np.pi * np.arange(4) / 4) * np.tanh(3.0))
    # Seasons flip with the hemisphere and vanish at the equator.
    assert sim.signal(np.array([0]), np.array([-45.0]), np.array([172.0]))[0] == pytest.approx(-s[0])
    assert sim.signal(np.array([0]), np.array([0.0]), np.array([172.0]))[0] == 0.0


def test_at_metadata_pictures_and_errors():
    sim = MetadataSimulator(10, interaction=1.0, groups=GROUPS)
    img = torch.full((1, 28, 28), 100, dtype=torch.uint8)
    out = sim.at_metadata(img, 0, [45.0, 45.0, -45.0], [172.0, 355.0, 172.0])
    assert out.shape == (3, 1, 28, 28) and out.dtype == torch.uint8
    assert not torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # winter north == summer south...
    with pytest.raises(ValueError, match="interaction"):
        MetadataSimulator(10, interaction=1.5)
    with pytest.raises(ValueError, match="groups"):
        MetadataSimulator(10, groups=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="latitudes and days"):
        sim.at_metadata(img, 0, [1.0], [])
    assert "interaction a = 1" in sim.describe()


# --- the Bayes ceiling's metadata likelihood ----------------------------------------------------------------------
def test_metadata_likelihood_is_a_normalised_density():
    """Integrates to 1 over the sphere's lat/lon rectangle and the days, also for a centre near a pole (where the
    folding over the pole matters) -- a likelihood that forgets the fold or the wrap fails this."""
    from ctcbook.data.metadata import MetadataArrays

    sim = MetadataSimulator(3, seed=0, location_spread=25.0, date_spread=40.0, background=0.2,
                            lat_range=(-85.0, 85.0))
    sim.centre_lat[:] = [80.0, -10.0, 0.0]
    sim.centre_lon[:] = [170.0, -175.0, 0.0]
    step = 2.0
    la, lo = np.meshgrid(np.arange(-90 + step / 2, 90, step), np.arange(-180 + step / 2, 180, step), indexing="ij")
    n = la.size
    loc_mass = np.zeros(3)
    for d in (1.0, 100.0, 300.0):          # location density integrated at fixed days, divided by p(day)
        meta = MetadataArrays(la.ravel(), lo.ravel(), np.full(n, d), np.full(n, 365), np.ones(n, bool))
        joint = np.exp(sim.log_likelihood(meta)).sum(0) * step * step
        day_only = np.exp(sim.log_likelihood(MetadataArrays(np.full(1, np.nan), np.full(1, np.nan),
                                                            np.full(1, d), np.full(1, 365), np.zeros(1, bool))))[0]
        loc_mass += joint / day_only / 3
    np.testing.assert_allclose(loc_mass, 1.0, atol=0.01)
    days = np.arange(1.0, 366.0)
    p_day = np.exp(sim.log_likelihood(MetadataArrays(np.full(365, np.nan), np.full(365, np.nan), days,
                                                     np.full(365, 365), np.zeros(365, bool))))
    np.testing.assert_allclose(p_day.sum(0), 1.0, atol=1e-9)


def test_bayes_from_metadata_alone_beats_chance_and_matches_samples():
    from ctcbook.data.metadata import bayes_posterior

    sim = MetadataSimulator(10, seed=0, missing_fraction=0.1)
    y = np.arange(4000) % 10
    meta = sim.sample(y, 5)
    post = bayes_posterior(np.full((len(y), 10), 0.1), sim.log_likelihood(meta))
    acc = (post.argmax(1) == y).mean()
    assert acc > 0.4                                   # chance is 0.1
    # Calibrated: the mean posterior of the true class equals the accuracy of drawing from the posterior.
    assert abs(post[np.arange(len(y)), y].mean() - (post ** 2).sum(1).mean()) < 0.02
