"""``train_missing(method="auto")`` trains every candidate method on the same features, adds only the one with the
highest label-free estimate, and records on its card each candidate's estimate (the very values their own cards
carry), the choice and why; its config is None or a dict keyed by candidate, anything else refused up front."""

import pytest
import torch
import torch.nn.functional as F

import spacegraph as sg
from spacegraph._method import pick_method
from tests.conftest import random_unit

DIM = 8
TURN = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(5)))[0]
SMALL_CMCR = {"steps": 20, "hidden_dim": 16, "out_dim": 8, "batch_size": 32}


class LinearSpace(sg.Space):
    """A space whose 'encoder' of each modality is the given linear map of float vectors."""

    def __init__(self, name: str, maps: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.maps = {sg.Modality(m): w for m, w in maps.items()}
        self.spec = sg.SpaceSpec(
            name=name, modalities=tuple(maps), dim=DIM, fingerprint=sg.fingerprint_state_dict(maps)
        )

    def _encode_batch(self, modality, batch):
        return torch.as_tensor(batch, dtype=torch.float32) @ self.maps[modality]


def clustered(centres: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = centres[torch.randint(len(centres), (n,), generator=generator)]
    return F.normalize(rows + 0.15 * torch.randn(n, DIM, generator=generator), dim=-1)


def rotated_spaces_graph(folder, *, memories: bool = True) -> sg.SpaceGraph:
    """Two spaces whose every embedding differs by one rotation, texts in one cone and the small memories (audio,
    images) in the opposite one, which the texts do not cover: a rotation carries the memories exactly, a lookup
    among the texts cannot reach them."""
    x = LinearSpace("x", {"audio": torch.eye(DIM), "text": torch.eye(DIM)})
    y = LinearSpace("y", {"text": TURN, "image": TURN})
    graph = sg.SpaceGraph([x, y], store=folder)
    axis = random_unit(1, DIM, 8)
    graph.add_data("text", "texts", clustered(F.normalize(axis + 0.6 * random_unit(6, DIM, 9), dim=-1), 100, 1))
    if memories:
        memory_centres = F.normalize(-axis + 0.6 * random_unit(6, DIM, 10), dim=-1)
        graph.add_data("audio", "clips", clustered(memory_centres, 40, 2))
        graph.add_data("image", "pictures", clustered(memory_centres, 40, 3))
    return graph


def trained_alone(folder, method: str) -> sg.Bridge:
    """``method`` trained by itself on the data, and with the config, auto gives its candidate."""
    graph = rotated_spaces_graph(folder)
    config = SMALL_CMCR if method == "cmcr" else None
    return graph.train_missing("audio", "image", method=method, config=config, show_progress_bar=False)


def test_auto_adds_only_the_candidate_with_the_highest_estimate_and_says_why(tmp_path):
    graph = rotated_spaces_graph(tmp_path / "cache")
    bridge = graph.train_missing("audio", "image", method="auto", config={"cmcr": SMALL_CMCR}, show_progress_bar=False)
    assert graph.bridges == [bridge] and bridge.card.method == "procrustes"
    assert graph.connect("audio", "image").bridges == [bridge]
    alone = {method: trained_alone(tmp_path / "cache", method) for method in sg.SpaceGraph.AUTO_METHODS}
    estimates = {method: other.card.quality["estimate"] for method, other in alone.items()}
    record = bridge.card.training["auto"]
    assert record["candidates"] == estimates and record["measure"] == "estimate" and record["chosen"] == "procrustes"
    assert estimates["procrustes"] > max(estimates["text-pivot"], estimates["cmcr"]) + 0.1
    assert record["why"].startswith(f"highest label-free estimate: {estimates['procrustes']:.3f}, ahead of text-pivot")
    assert bridge.fingerprint == alone["procrustes"].fingerprint  # the same weights: only the card gained the record
    assert bridge.card.training == {**alone["procrustes"].card.training, "auto": record}


def test_the_choice_survives_a_save_and_keeps_the_fingerprint(tmp_path):
    graph = rotated_spaces_graph(tmp_path / "cache")
    bridge = graph.train_missing("audio", "image", method="auto", config={"cmcr": SMALL_CMCR}, show_progress_bar=False)
    loaded = sg.Bridge.load(bridge.save(tmp_path / "bridge"))
    assert loaded.card.training["auto"] == bridge.card.training["auto"] and loaded.fingerprint == bridge.fingerprint


def test_without_memories_auto_ranks_by_held_out_matching(tmp_path):
    graph = rotated_spaces_graph(tmp_path / "cache", memories=False)
    graph.add_data("audio", "clips", random_unit(10, DIM, 4))  # a memory on one side only: still no estimate
    bridge = graph.train_missing("audio", "image", method="auto", config={"cmcr": SMALL_CMCR}, show_progress_bar=False)
    record = bridge.card.training["auto"]
    assert record["measure"] == "held_out_R@1" and record["chosen"] == "procrustes"
    assert record["candidates"]["procrustes"] == bridge.card.quality["held_out_R@1"] == 1.0
    assert "held-out overlap matching" in record["why"]


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ({"cmcrr": {}}, sg.SpacegraphValueError, r"config keys \['cmcrr'\] are not candidates"),
        ({"steps": 3}, sg.SpacegraphValueError, r"config keys \['steps'\] are not candidates"),
        ([("cmcr", {})], sg.SpacegraphTypeError, "method='auto' takes config=None or a dict keyed by candidate"),
    ],
)
def test_auto_configs_other_than_a_dict_of_candidates_are_refused_before_training(tmp_path, config, error, message):
    graph = rotated_spaces_graph(tmp_path / "cache")
    with pytest.raises(error, match=message) as raised:
        graph.train_missing("audio", "image", method="auto", config=config, show_progress_bar=False)
    assert "procrustes, text-pivot, cmcr" in str(raised.value)
    assert graph.bridges == [] and not (tmp_path / "cache").exists()  # nothing encoded, nothing trained


def test_a_bad_config_of_one_candidate_names_that_candidate(tmp_path):
    graph = rotated_spaces_graph(tmp_path / "cache")
    with pytest.raises(sg.SpacegraphValueError, match=r"'text-pivot': invalid config \(anchor: Extra inputs"):
        graph.train_missing("audio", "image", method="auto", config={"text-pivot": {"anchor": 5}})
    assert graph.bridges == []


def test_auto_keeps_cmcr_unless_another_method_reads_above_its_interval():
    values = {"procrustes": 0.70, "text-pivot": 0.72, "cmcr": 0.69}
    kept = pick_method(values, intervals={"cmcr": (0.64, 0.74)})
    assert kept["chosen"] == "cmcr" and "no other candidate reads above" in kept["why"]
    beaten = pick_method({**values, "text-pivot": 0.80}, intervals={"cmcr": (0.64, 0.74)})
    assert beaten["chosen"] == "text-pivot" and "above cmcr's 90% interval" in beaten["why"]
    assert pick_method(values)["chosen"] == "text-pivot"  # without cmcr's interval: the highest
