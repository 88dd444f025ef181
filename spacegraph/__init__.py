"""spacegraph: join pretrained multimodal contrastive spaces into one graph.

import spacegraph as sg
graph = sg.SpaceGraph([audio_text_space, image_text_space])
graph.add_bridge(sg.Bridge.load("runs/demo/bridge"))
route = graph.connect("audio", "image")
scores = route.encode("audio", wav_paths) @ route.encode("image", images).T
"""

import importlib
from types import ModuleType

from . import _errors
from ._bridge import Bridge, BridgeCard, BridgeFeatures, HeadSpec
from ._errors import *  # every error class, as listed in _errors.__all__
from ._eval import retrieval_metrics, zero_shot_accuracy
from ._features import FeatureStore
from ._graph import SpaceGraph
from ._index import SearchIndex, SearchResult
from ._joint import JointSpace
from ._modality import Modality, known_modalities, register_modality
from ._planner import Plan
from ._probe import Probe
from ._registry import (
    get_bridge_method,
    list_bridge_methods,
    list_spaces,
    load_space,
    register_bridge_method,
    register_space,
)
from ._route import Route
from ._space import Space, SpaceSpec, fingerprint_state_dict

__version__ = "0.1.0"


def __getattr__(name: str) -> ModuleType:
    """``spacegraph.plugin`` (the public API for plugin authors) is imported on first use, keeping this import light."""
    if name == "plugin":
        return importlib.import_module(".plugin", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Bridge",
    "BridgeCard",
    "BridgeFeatures",
    "FeatureStore",
    "HeadSpec",
    "JointSpace",
    "Modality",
    "Plan",
    "Probe",
    "Route",
    "SearchIndex",
    "SearchResult",
    "Space",
    "SpaceGraph",
    "SpaceSpec",
    "__version__",
    "fingerprint_state_dict",
    "get_bridge_method",
    "known_modalities",
    "list_bridge_methods",
    "list_spaces",
    "load_space",
    "plugin",
    "register_bridge_method",
    "register_modality",
    "register_space",
    "retrieval_metrics",
    "zero_shot_accuracy",
]
__all__ += _errors.__all__
