"""The public API for plugin authors: everything a third-party space, bridge method or modality needs.

A space subclasses :class:`Space` (or :class:`ModelSpace` for one backed by a torch module), sets ``self.spec``
and implements ``_encode_batch`` (or ``_prepare_batch`` + ``_encode_prepared``, so that ``encode(num_workers=N)``
reads media in worker processes). A bridge method is any class matching :class:`BridgeMethod`. Both register
with a decorator or through the entry-point groups ``spacegraph.spaces`` / ``spacegraph.bridges``; an evaluation
dataset adapter with :func:`register_dataset` or the ``spacegraph.datasets`` group; a new modality
registers with :func:`register_modality` or the ``spacegraph.modalities`` group. The built-in plugins in
``spaces/`` and ``bridges/`` use nothing else.

A bridge method that trains heads subclasses :class:`BridgeMethodBase` and writes only its training::

    class MyConfig(BaseModel):
        steps: int = 100

    @register_bridge_method("my-method")
    class MyMethod(BridgeMethodBase[MyConfig]):
        name, config_class = "my-method", MyConfig

        def fit(self, x, y, overlap, features, config, *, show_progress_bar):
            head_x, head_y = ProjectionHead(HeadSpec(in_dim=x.dim, out_dim=64)), ...
            for step in progress_range(config.steps, self.name, show_progress_bar=show_progress_bar):
                ...  # train on features.overlap_x / overlap_y (and the memories)
            return TrainedHeads(head_x, head_y, held_out=held_out_rows)

``train`` (the :class:`BridgeMethod` protocol) does the rest: it turns None, a dict or a ``MyConfig`` into a
validated ``MyConfig`` (refusing unknown fields, naming the accepted ones), checks that both spaces embed the
overlap and that the features match them, measures the heads (:func:`measure_quality`: held-out matching and the
label-free estimate the planner ranks by) and builds the card (``head_y=None`` makes an extend bridge into ``y``).
Cards are frozen: change one with ``card.model_copy(update={...})`` (validated) and set ``bridge.card``.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import _errors
from ._atomic import atomic_dir, atomic_path, recover_interrupted_save, write_text_atomic
from ._batching import enumerate_batch
from ._bridge import Bridge, BridgeFeatures, ProjectionHead
from ._card import BridgeCard, Calibration, HeadArch, HeadSpec, SpaceRef
from ._checkpoint import load_weights_only
from ._checks import check_count, checked_device
from ._distributed import GlobalBatchNorm1d, RankSlice, rank_device, with_global_batch_norm
from ._errors import *  # every error class, as listed in _errors.__all__
from ._eval import chance_metrics, linear_probe_accuracy, pair_recall_at_1, retrieval_metrics, zero_shot_accuracy
from ._method import BridgeMethod, BridgeMethodBase, TrainedHeads, check_pair, measure_quality, progress_range
from ._modality import Modality, as_modality, known_modalities, register_modality
from ._model_space import ModelSpace
from ._names import check_path_name, path_component
from ._optional import require
from ._quality import (
    ESTIMATE_SETTINGS,
    EstimateData,
    EstimateSettings,
    PseudoLabels,
    estimate_quality,
    heads_quality,
    held_out_quality,
    pseudo_map,
    subsample,
)
from ._registry import register_bridge_method, register_dataset, register_space
from ._space import (
    Space,
    SpaceSpec,
    check_embeddings,
    fingerprint_state_dict,
    json_digest,
    model_config_identity,
    tokenizer_identity,
)
from ._stages import StageClock
from ._streaming import nearest, project_rows, row_blocks, top_k
from ._weights import layout_problems, read_shapes, read_tensors, read_weights, tensor_problem

__all__ = [
    "ESTIMATE_SETTINGS",
    "Bridge",
    "BridgeCard",
    "BridgeFeatures",
    "BridgeMethod",
    "BridgeMethodBase",
    "Calibration",
    "EstimateData",
    "EstimateSettings",
    "GlobalBatchNorm1d",
    "HeadArch",
    "HeadSpec",
    "Modality",
    "ModelSpace",
    "ProjectionHead",
    "PseudoLabels",
    "RankSlice",
    "Space",
    "SpaceRef",
    "SpaceSpec",
    "StageClock",
    "TrainedHeads",
    "as_modality",
    "atomic_dir",
    "atomic_path",
    "chance_metrics",
    "check_count",
    "check_embeddings",
    "check_pair",
    "check_path_name",
    "checked_device",
    "enumerate_batch",
    "estimate_quality",
    "fingerprint_state_dict",
    "heads_quality",
    "held_out_quality",
    "json_digest",
    "known_modalities",
    "layout_problems",
    "linear_probe_accuracy",
    "load_weights_only",
    "measure_quality",
    "model_config_identity",
    "nearest",
    "pair_recall_at_1",
    "path_component",
    "progress_range",
    "project_rows",
    "pseudo_map",
    "rank_device",
    "read_shapes",
    "read_tensors",
    "read_weights",
    "recover_interrupted_save",
    "register_bridge_method",
    "register_dataset",
    "register_modality",
    "register_space",
    "require",
    "retrieval_metrics",
    "row_blocks",
    "subsample",
    "tensor_problem",
    "tokenizer_identity",
    "top_k",
    "with_global_batch_norm",
    "write_text_atomic",
    "zero_shot_accuracy",
]
__all__ += _errors.__all__


def __getattr__(name: str) -> Any:
    """``Shard``, the old name of :class:`RankSlice`, still imports, with a DeprecationWarning."""
    if name == "Shard":
        warnings.warn(
            "spacegraph.plugin.Shard is renamed RankSlice (a shard is a feature cache file); import RankSlice",
            DeprecationWarning,
            stacklevel=2,
        )
        return RankSlice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
