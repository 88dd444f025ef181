"""spacegraph: join pretrained multimodal contrastive spaces into one graph.

import spacegraph as sg
graph = sg.SpaceGraph([audio_text_space, image_text_space])
graph.add_bridge(sg.Bridge.load("runs/demo/bridge"))
route = graph.connect("audio", "image")
scores = route.encode("audio", wav_paths) @ route.encode("image", images).T
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import _errors
from ._errors import *  # every error class, as listed in _errors.__all__

__version__ = "0.1.0"

# Each public name and the module that defines it. They are imported on first use (PEP 562), so that
# `import spacegraph` and `spacegraph --help` do not wait for torch.
_EXPORTS = {
    "Bridge": "_bridge",
    "BridgeCard": "_bridge",
    "BridgeFeatures": "_bridge",
    "HeadSpec": "_bridge",
    "retrieval_metrics": "_eval",
    "pair_metrics": "_eval",
    "pair_threshold": "_eval",
    "Classification": "_classify",
    "localization_metrics": "_localization",
    "zero_shot_accuracy": "_eval",
    "FeatureStore": "_features",
    "SpaceGraph": "_graph",
    "space_reference": "_graph_artifact",
    "SearchIndex": "_index",
    "SearchResult": "_index",
    "JointSpace": "_joint",
    "Modality": "_modality",
    "known_modalities": "_modality",
    "register_modality": "_modality",
    "Plan": "_planner",
    "Probe": "_probe",
    "get_bridge_method": "_registry",
    "list_bridge_methods": "_registry",
    "list_datasets": "_registry",
    "list_spaces": "_registry",
    "load_dataset": "_registry",
    "load_space": "_registry",
    "register_bridge_method": "_registry",
    "register_dataset": "_registry",
    "register_space": "_registry",
    "Route": "_route",
    "RouteEnsemble": "_ensemble",
    "Space": "_space",
    "SpaceSpec": "_space",
    "fingerprint_state_dict": "_space",
}

if TYPE_CHECKING:  # the same names for type checkers and editors ("X as X": a re-export)
    from . import plugin as plugin
    from ._bridge import (
        Bridge as Bridge,
    )
    from ._bridge import (
        BridgeCard as BridgeCard,
    )
    from ._bridge import (
        BridgeFeatures as BridgeFeatures,
    )
    from ._bridge import (
        HeadSpec as HeadSpec,
    )
    from ._classify import Classification as Classification
    from ._ensemble import RouteEnsemble as RouteEnsemble
    from ._eval import pair_metrics as pair_metrics
    from ._eval import pair_threshold as pair_threshold
    from ._eval import retrieval_metrics as retrieval_metrics
    from ._eval import zero_shot_accuracy as zero_shot_accuracy
    from ._features import FeatureStore as FeatureStore
    from ._graph import SpaceGraph as SpaceGraph
    from ._graph_artifact import space_reference as space_reference
    from ._index import SearchIndex as SearchIndex
    from ._index import SearchResult as SearchResult
    from ._joint import JointSpace as JointSpace
    from ._localization import localization_metrics as localization_metrics
    from ._modality import (
        Modality as Modality,
    )
    from ._modality import (
        known_modalities as known_modalities,
    )
    from ._modality import (
        register_modality as register_modality,
    )
    from ._planner import Plan as Plan
    from ._probe import Probe as Probe
    from ._registry import (
        get_bridge_method as get_bridge_method,
    )
    from ._registry import (
        list_bridge_methods as list_bridge_methods,
    )
    from ._registry import (
        list_datasets as list_datasets,
    )
    from ._registry import (
        list_spaces as list_spaces,
    )
    from ._registry import (
        load_dataset as load_dataset,
    )
    from ._registry import (
        load_space as load_space,
    )
    from ._registry import (
        register_bridge_method as register_bridge_method,
    )
    from ._registry import (
        register_dataset as register_dataset,
    )
    from ._registry import (
        register_space as register_space,
    )
    from ._route import Route as Route
    from ._space import Space as Space
    from ._space import SpaceSpec as SpaceSpec
    from ._space import fingerprint_state_dict as fingerprint_state_dict


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; ``spacegraph.plugin`` is the plugin authors' API."""
    if name == "plugin":
        return importlib.import_module(".plugin", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", "plugin"]
__all__ += list(_EXPORTS)
__all__ += _errors.__all__
