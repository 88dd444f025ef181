"""A joint space embeds exactly as its member space does, then the member's head: through the member's own batch
path, with the caller's batching, worker processes and precision."""

import os

import pytest
import torch

import spacegraph as sg
from spacegraph.plugin import BridgeCard, HeadSpec, SpaceRef


class LoggedSpace(sg.Space):
    """Prepares a batch of float rows (logging the id of the process that prepared it) and maps it linearly."""

    def __init__(self, name: str, modalities: tuple[str, ...], dim: int, log: os.PathLike, seed: int) -> None:
        super().__init__()
        self.weight = torch.randn(8, dim, generator=torch.Generator().manual_seed(seed))
        self.log = log
        fingerprint = sg.fingerprint_state_dict({"weight": self.weight})
        self.spec = sg.SpaceSpec(name=name, modalities=modalities, dim=dim, fingerprint=fingerprint)

    def to(self, device):
        super().to(device)
        self.weight = self.weight.to(device)
        return self

    def _prepare_batch(self, modality, batch):
        with open(self.log, "a") as log:
            log.write(f"{os.getpid()}\n")
        return torch.as_tensor(batch, dtype=torch.float32)

    def _encode_prepared(self, modality, prepared):
        return prepared @ self.weight

    def preparers(self) -> list[int]:
        """The process ids of the prepare calls so far, one per call; the log is emptied."""
        with open(self.log) as log:
            pids = [int(line) for line in log]
        os.remove(self.log)
        return pids


def connect_bridge(x: sg.Space, y: sg.Space) -> sg.Bridge:
    """A connect bridge of ``x`` and ``y`` with freshly initialised (untrained) heads."""
    torch.manual_seed(0)
    card = BridgeCard(
        library_version=sg.__version__,
        name=f"{x.name}+{y.name}",
        method="test-untrained",
        spaces=(SpaceRef.of(x.spec), SpaceRef.of(y.spec)),
        overlap="text",
        heads={space.name: HeadSpec(in_dim=space.spec.dim, hidden_dim=16, out_dim=4) for space in (x, y)},
    )
    return sg.Bridge(card).eval()


@pytest.fixture
def joint(tmp_path):
    at = LoggedSpace("at", ("audio", "text"), 6, tmp_path / "at.log", seed=1)
    ti = LoggedSpace("ti", ("text", "image"), 10, tmp_path / "ti.log", seed=2)
    return sg.JointSpace(connect_bridge(at, ti), [at, ti])


INPUTS = torch.randn(7, 8, generator=torch.Generator().manual_seed(3))


def assert_member_then_head(joint, modality, precision):
    member = joint.member(sg.Modality(modality))
    expected = joint.bridge.project(member.name, member.encode(modality, INPUTS, batch_size=3, precision=precision))
    got = joint.encode(modality, INPUTS, batch_size=3, precision=precision)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    # float32 tolerance: the head maps the batches one by one here, all rows at once above
    torch.testing.assert_close(got, torch.nn.functional.normalize(expected, dim=-1))
    if precision != "fp32":  # not vacuous: autocast changes the member's embeddings
        assert not torch.equal(got, joint.encode(modality, INPUTS, batch_size=3))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("modality", ["audio", "image"])
def test_joint_embeddings_are_the_members_through_its_head(joint, modality, precision):
    assert_member_then_head(joint, modality, precision)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_joint_embeddings_are_the_members_through_its_head_on_cuda(joint, precision):
    assert_member_then_head(joint.to("cuda"), "audio", precision)


def test_each_batch_is_prepared_once_in_the_workers(joint):
    member = joint.member(sg.Modality("audio"))
    in_process = joint.encode("audio", INPUTS, batch_size=3)
    assert member.preparers() == [os.getpid()] * 3  # three batches, each prepared once, not again inside
    in_workers = joint.encode("audio", INPUTS, batch_size=3, num_workers=2)
    prepared_by = member.preparers()
    assert len(prepared_by) == 3 and os.getpid() not in prepared_by
    assert torch.equal(in_workers, in_process)
