"""The ``procrustes`` method recovers a rotation between two spaces exactly (a semi-orthogonal map where their dims
differ), with whitening also a stretched linear map, and writes the card every method writes: an extend bridge with
one ``linear`` head, held-out matching, the label-free estimate and what the fit found."""

import pytest
import torch
from spacegraph_bridges.procrustes import ProcrustesMethod, fit_procrustes

import spacegraph as sg
from tests.conftest import ToySpace, random_unit


def rotation(dim: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)))[0]


def clustered(n: int, seed: int) -> torch.Tensor:
    """Unit rows around 6 fixed centres: data with classes, for the label-free estimate to find."""
    generator = torch.Generator().manual_seed(seed)
    centres = random_unit(6, 8, 99)[torch.randint(6, (n,), generator=generator)]
    return torch.nn.functional.normalize(centres + 0.2 * torch.randn(n, 8, generator=generator), dim=-1)


def test_a_rotation_between_the_spaces_is_recovered_and_scored_high():
    x, y = ToySpace("x", ("audio", "text"), 8, seed=1), ToySpace("y", ("text", "image"), 8, seed=2)
    turn = rotation(8, 5)
    overlap, memory_x, memory_y = clustered(100, 0), clustered(40, 1), clustered(40, 2)
    features = sg.BridgeFeatures(overlap, overlap @ turn, memory_x, memory_y @ turn)
    bridge = ProcrustesMethod().train(x.spec, y.spec, "text", features, show_progress_bar=False)
    card = bridge.card
    assert (card.method, card.kind, card.name, card.heads["x"].arch) == ("procrustes", "extend", "x->y", "linear")
    torch.testing.assert_close(bridge.project("x", memory_x), memory_x @ turn, atol=1e-5, rtol=0)
    assert card.quality["held_out_R@1"] == 1.0 and card.quality["n_val"] == 10
    assert card.quality["estimate"] > 0.8 and card.quality["estimate_alignment"] > 0.99
    assert card.training["fit_rows"] == 90 and card.training["whiten"] is False
    assert card.training["procrustes_fit"] == pytest.approx(1.0) and card.training["scale"] == pytest.approx(1.0)


def test_a_semi_orthogonal_map_into_a_wider_space_is_recovered():
    x, y = ToySpace("x", ("audio", "text"), 6, seed=1), ToySpace("y", ("text", "image"), 10, seed=2)
    embedding = rotation(10, 3)[:6]  # [6, 10], orthonormal rows
    overlap = random_unit(60, 6, 0)
    bridge = ProcrustesMethod().train(
        x.spec, y.spec, "text", sg.BridgeFeatures(overlap, overlap @ embedding), show_progress_bar=False
    )
    assert bridge.card.heads["x"] == sg.HeadSpec(arch="linear", in_dim=6, out_dim=10)
    rows = random_unit(5, 6, 1)
    torch.testing.assert_close(bridge.project("x", rows), rows @ embedding, atol=1e-5, rtol=0)


def isotropic(n: int, dim: int, seed: int) -> torch.Tensor:
    """Rows whose centred covariance is exactly the identity."""
    rows = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(rows - rows.mean(dim=0))
    return (q * n**0.5).float()


def test_whitening_recovers_a_stretched_linear_map_that_a_rotation_alone_cannot():
    target = isotropic(400, 6, 0)
    stretch = torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.3, 0.2])) @ rotation(6, 1)
    source = target @ torch.linalg.inv(stretch)  # the target is a linear map of the source
    plain = fit_procrustes(source, target, whiten=False, shrinkage=1e-6)
    whitened = fit_procrustes(source, target, whiten=True, shrinkage=1e-6)

    def error(fitted):
        return (source @ fitted.weight + fitted.bias - target).norm() / target.norm()

    assert error(whitened) < 1e-3 and error(plain) > 0.1
    assert whitened.fit == pytest.approx(1.0, abs=1e-5) and plain.fit < 0.99


def test_the_whiten_option_reaches_the_fit_and_the_card():
    x, y = ToySpace("x", ("audio", "text"), 6, seed=1), ToySpace("y", ("text", "image"), 6, seed=2)
    target = torch.nn.functional.normalize(isotropic(200, 6, 0), dim=-1)
    features = sg.BridgeFeatures(target @ torch.diag(torch.tensor([5.0, 3.0, 1.0, 1.0, 0.5, 0.2])), target)
    config = {"whiten": True, "shrinkage": 0.001}
    bridge = ProcrustesMethod().train(x.spec, y.spec, "text", features, config, show_progress_bar=False)
    plain = ProcrustesMethod().train(x.spec, y.spec, "text", features, show_progress_bar=False)
    assert bridge.card.training["whiten"] is True and bridge.card.training["shrinkage"] == 0.001
    assert bridge.card.training["procrustes_fit"] > plain.card.training["procrustes_fit"]
    assert bridge.card.quality["held_out_R@1"] >= plain.card.quality["held_out_R@1"]


def test_overlap_rows_that_do_not_vary_are_refused():
    x, y = ToySpace("x", ("audio", "text"), 4, seed=1), ToySpace("y", ("text", "image"), 4, seed=2)
    same = random_unit(1, 4, 0).repeat(20, 1)
    with pytest.raises(sg.SpacegraphValueError, match="rows of one space are all the same"):
        ProcrustesMethod().train(x.spec, y.spec, "text", sg.BridgeFeatures(same, random_unit(20, 4, 1)))
