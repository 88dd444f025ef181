"""spacegraph: join pretrained multimodal contrastive spaces into one graph.

import spacegraph as sg
graph = sg.SpaceGraph([audio_text_space, image_text_space])
graph.add_bridge(sg.Bridge.load("runs/demo/bridge"))
route = graph.connect("audio", "image")
scores = route.encode("audio", wav_paths) @ route.encode("image", images).T
"""

from ._bridge import Bridge, BridgeCard, BridgeFeatures, HeadSpec
from ._errors import FingerprintMismatchError, NoRouteError, UnknownNameError
from ._eval import retrieval_metrics, zero_shot_accuracy
from ._features import FeatureStore
from ._graph import Plan, Route, SpaceGraph
from ._joint import JointSpace
from ._modality import Modality
from ._probe import Probe
from ._registry import (
    get_bridge_method,
    list_bridge_methods,
    list_spaces,
    load_space,
    register_bridge_method,
    register_space,
)
from ._space import Space, SpaceSpec, fingerprint_state_dict

__version__ = "0.1.0"
__all__ = [
    "Bridge",
    "BridgeCard",
    "BridgeFeatures",
    "FeatureStore",
    "FingerprintMismatchError",
    "HeadSpec",
    "JointSpace",
    "Modality",
    "NoRouteError",
    "Plan",
    "Probe",
    "Route",
    "Space",
    "SpaceGraph",
    "SpaceSpec",
    "UnknownNameError",
    "__version__",
    "fingerprint_state_dict",
    "get_bridge_method",
    "list_bridge_methods",
    "list_spaces",
    "load_space",
    "register_bridge_method",
    "register_space",
    "retrieval_metrics",
    "zero_shot_accuracy",
]
