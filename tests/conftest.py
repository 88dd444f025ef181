import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import spacegraph as sg

torch.set_num_threads(1)  # the tests use small models: one thread each is fastest on a shared 2-core machine


class ToySpace(sg.Space):
    """A space whose 'encoders' are fixed random linear maps of float vectors, one per modality."""

    def __init__(self, name: str, modalities: tuple[str, ...], dim: int, in_dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.maps = {sg.Modality(m): torch.randn(in_dim, dim, generator=generator) for m in modalities}
        state = {m.value: w for m, w in self.maps.items()}
        self.spec = sg.SpaceSpec(
            name=name, modalities=modalities, dim=dim, fingerprint=sg.fingerprint_state_dict(state)
        )

    def _encode_batch(self, modality, batch):
        return torch.as_tensor(batch, dtype=torch.float32) @ self.maps[modality]


@pytest.fixture
def toy_spaces():
    return ToySpace("toy-at", ("audio", "text"), 6, seed=1), ToySpace("toy-ti", ("text", "image"), 10, seed=2)


def random_unit(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def chain_of_three_spaces() -> tuple[ToySpace, ToySpace, ToySpace]:
    """Audio-text, text-image and image-lowres: each shares a modality with the next."""
    return (
        ToySpace("toy-at", ("audio", "text"), 6, seed=1),
        ToySpace("toy-ti", ("text", "image"), 10, seed=2),
        ToySpace("toy-il", ("image", "lowres_image"), 5, seed=3),
    )
