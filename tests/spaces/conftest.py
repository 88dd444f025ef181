"""Fixtures of the CLIP space tests: tiny random-weight open_clip and transformers CLIP models, written once per
module to a temp folder and loaded through the spaces' real loaders."""

import pytest
from spacegraph_spaces.hf_clip import HFCLIPSpace
from spacegraph_spaces.openclip import OpenCLIPSpace

from tests.spaces.test_clip_spaces import write_tiny_hf_clip, write_tiny_openclip


@pytest.fixture(scope="module")
def oc_name(tmp_path_factory) -> str:
    return write_tiny_openclip(tmp_path_factory.mktemp("openclip") / "tiny", seed=0)


@pytest.fixture(scope="module")
def hf_path(tmp_path_factory) -> str:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("hfclip") / "tiny", seed=0)


@pytest.fixture(scope="module")
def oc_space(oc_name):
    return OpenCLIPSpace(oc_name)


@pytest.fixture(scope="module")
def hf_space(hf_path):
    return HFCLIPSpace(hf_path)


@pytest.fixture(params=["oc_space", "hf_space"])
def space(request):
    return request.getfixturevalue(request.param)
