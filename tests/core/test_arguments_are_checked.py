"""Public functions check their arguments against their annotations before they run, and a plugin space's own
errors reach the caller as spacegraph errors naming the space and the items."""

import numpy as np
import pydantic
import pytest
import torch

import spacegraph as sg
from spacegraph import plugin
from tests.conftest import ToySpace, random_unit


def test_a_wrong_argument_names_the_function_the_argument_and_what_it_accepts():
    with pytest.raises(sg.SpacegraphArgumentError) as caught:
        plugin.top_k(random_unit(3, 4, 0), "keys", 2)
    assert str(caught.value) == "top_k: argument 'keys': Input should be an instance of Tensor, got str 'keys'"
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    assert isinstance(caught.value.__cause__, pydantic.ValidationError)
    with pytest.raises(sg.SpacegraphArgumentError, match=r"argument 'k': Input should be a valid integer, got str '2'"):
        plugin.top_k(random_unit(3, 4, 0), random_unit(5, 4, 1), "2")  # strict: nothing converted silently


def test_methods_are_checked_and_paths_may_be_strings(toy_spaces, tmp_path):
    graph = sg.SpaceGraph(list(toy_spaces))
    with pytest.raises(sg.SpacegraphArgumentError, match=r"SpaceGraph.plan: argument 'max_routes'"):
        graph.plan("audio", "image", max_routes=2.0)
    with pytest.raises(sg.NoRouteError, match="empty path"):  # found by seed 11 of the entry-point run
        graph.leg("audio", [])
    index = sg.SearchIndex.build(random_unit(6, 4, 0))
    index.save(str(tmp_path / "index"))
    assert sg.SearchIndex.load(str(tmp_path / "index")).dim == 4


class FailingSpace(ToySpace):
    def __init__(self, error: BaseException) -> None:
        super().__init__("failing", ("audio",), 4)
        self.error = error

    def _encode_batch(self, modality, batch):
        raise self.error


def test_a_plugin_spaces_own_error_names_the_space_and_the_items():
    with pytest.raises(sg.SpacegraphValueError, match=r"space 'failing' could not encode audio items 0\.\.2: "
                       r"RuntimeError: shapes do not match") as caught:  # fmt: skip
        FailingSpace(RuntimeError("shapes do not match")).encode("audio", np.ones((3, 8), np.float32))
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(MemoryError):  # running out of memory is not the input's fault: it passes as it is
        FailingSpace(MemoryError()).encode("audio", np.ones((3, 8), np.float32))
    with pytest.raises(sg.UnknownNameError):  # spacegraph's own errors too
        FailingSpace(sg.UnknownNameError("no such id")).encode("audio", np.ones((3, 8), np.float32))


def test_saving_to_a_name_no_file_system_holds_is_refused(tmp_path):
    bridge_folder = tmp_path / ("x" * 300)
    with pytest.raises(sg.SaveRefusedError, match="its name is 300 bytes long"):
        sg.SearchIndex.build(torch.eye(4)).save(bridge_folder)
    with pytest.raises(sg.SpacegraphFileNotFoundError, match="no such folder"):
        sg.SearchIndex.load(bridge_folder)
    with pytest.raises(sg.SaveRefusedError, match="cannot be encoded"):
        plugin.write_text_atomic(tmp_path / "a\ud800b", "text")
    assert list(tmp_path.iterdir()) == []
