"""The public API for plugin authors: everything a third-party space, bridge method or modality needs.

A space subclasses :class:`Space` (or :class:`ModelSpace` for one backed by a torch module), sets ``self.spec``
and implements ``_encode_batch`` (or ``_prepare_batch`` + ``_encode_prepared``, so that ``encode(num_workers=N)``
reads media in worker processes). A bridge method is any class matching :class:`BridgeMethod`. Both register
with a decorator or through the entry-point groups ``spacegraph.spaces`` / ``spacegraph.bridges``; a new modality
registers with :func:`register_modality` or the ``spacegraph.modalities`` group. The built-in plugins in
``spaces/`` and ``bridges/`` use nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ._atomic import atomic_dir, atomic_path, recover_interrupted_save, write_text_atomic
from ._bridge import Bridge, BridgeCard, BridgeFeatures, HeadArch, HeadSpec, ProjectionHead, SpaceRef
from ._checkpoint import load_weights_only
from ._ddp import GlobalBatchNorm1d, Shard, with_global_batch_norm
from ._distributed import rank_device
from ._errors import (
    FingerprintMismatchError,
    MissingExtraError,
    NoRouteError,
    SaveRefusedError,
    SpacegraphError,
    SpacegraphFileNotFoundError,
    SpacegraphIndexError,
    SpacegraphTypeError,
    SpacegraphValueError,
    UnknownModalityError,
    UnknownNameError,
)
from ._eval import linear_probe_accuracy, pair_recall_at_1, retrieval_metrics, zero_shot_accuracy
from ._modality import Modality, as_modality, known_modalities, register_modality
from ._model_space import ModelSpace
from ._names import check_path_name, path_component
from ._optional import require
from ._quality import PseudoLabels, estimate_quality, heads_quality, held_out_quality, pseudo_map, subsample
from ._registry import register_bridge_method, register_space
from ._space import (
    Space,
    SpaceSpec,
    check_embeddings,
    enumerate_batch,
    fingerprint_state_dict,
    json_digest,
    model_config_identity,
    tokenizer_identity,
)
from ._streaming import nearest, project_rows, row_blocks, top_k
from ._weights import layout_problems, read_shapes, read_tensors, tensor_problem


@runtime_checkable
class BridgeMethod(Protocol):
    """What :meth:`SpaceGraph.train_bridge` calls: the registered factory is called with no arguments, then
    ``train(x, y, overlap, features, config, name=..., show_progress_bar=...)`` on the result.

    ``x`` and ``y`` are the specs of the two nodes (spaces or joint spaces), ``overlap`` the modality both read,
    ``features`` their cached features (checked with ``features.check(x, y)``), ``config`` whatever the user
    passed (None, a dict or the method's own config object). It returns a :class:`Bridge` whose card names
    ``x`` and ``y`` (``SpaceRef.of``) and ``overlap``.
    """

    name: str

    def train(
        self,
        x: SpaceSpec,
        y: SpaceSpec,
        overlap: str | Modality,
        features: BridgeFeatures,
        config: Any = None,
        *,
        name: str | None = None,
        show_progress_bar: bool = True,
    ) -> Bridge: ...


__all__ = [
    "Bridge",
    "BridgeCard",
    "BridgeFeatures",
    "BridgeMethod",
    "FingerprintMismatchError",
    "GlobalBatchNorm1d",
    "HeadArch",
    "HeadSpec",
    "MissingExtraError",
    "Modality",
    "ModelSpace",
    "NoRouteError",
    "ProjectionHead",
    "PseudoLabels",
    "SaveRefusedError",
    "Shard",
    "Space",
    "SpaceRef",
    "SpaceSpec",
    "SpacegraphError",
    "SpacegraphFileNotFoundError",
    "SpacegraphIndexError",
    "SpacegraphTypeError",
    "SpacegraphValueError",
    "UnknownModalityError",
    "UnknownNameError",
    "as_modality",
    "atomic_dir",
    "atomic_path",
    "check_embeddings",
    "check_path_name",
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
    "model_config_identity",
    "nearest",
    "pair_recall_at_1",
    "path_component",
    "project_rows",
    "pseudo_map",
    "rank_device",
    "read_shapes",
    "read_tensors",
    "recover_interrupted_save",
    "register_bridge_method",
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
