"""Zero-shot classification: class names through prompt templates as text embeddings, items scored against them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._eval import _labels

DEFAULT_TEMPLATES = ("{}",)


def check_class_names(class_names: Any) -> tuple[str, ...]:
    names = tuple(class_names) if isinstance(class_names, (list, tuple)) else None
    if not names or not all(isinstance(name, str) and name.strip() for name in names):
        raise SpacegraphTypeError(f"class_names must be a non-empty list of non-empty strings, got {class_names!r}")
    if len(set(names)) != len(names):
        raise SpacegraphValueError(f"class_names must be distinct, got {list(names)}")
    return names


def prompts(templates: Sequence[str] | None, name: str) -> list[str]:
    """The class ``name`` put into each template, where it holds ``{}`` or ``{c}``."""
    chosen = DEFAULT_TEMPLATES if templates is None else templates
    if isinstance(chosen, str) or not chosen:
        raise SpacegraphTypeError(f"templates must be a non-empty list of strings, got {templates!r}")
    out = []
    for template in chosen:
        if not isinstance(template, str) or ("{}" not in template and "{c}" not in template):
            raise SpacegraphValueError(f"each template holds '{{}}' or '{{c}}' for the class name, got {template!r}")
        out.append(template.replace("{c}", "{}").replace("{}", name))
    return out


def class_embeddings(
    embed_texts: Callable[[list[str]], torch.Tensor], class_names: Sequence[str], templates: Sequence[str] | None
) -> torch.Tensor:
    """``[classes, dim]``: each class the normalised mean of its prompts' embeddings (CLIP's prompt ensemble)."""
    texts = [text for name in class_names for text in prompts(templates, name)]
    embedded = F.normalize(embed_texts(texts), dim=-1)
    return F.normalize(embedded.reshape(len(class_names), -1, embedded.shape[-1]).mean(dim=1), dim=-1)


@dataclass(frozen=True)
class Classification:
    """Class probabilities of each item (``[n, classes]``, rows summing to 1) over ``class_names``."""

    probabilities: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def predicted(self) -> torch.Tensor:
        """Each item's most probable class index."""
        return self.probabilities.argmax(dim=1)

    def top_k(self, k: int = 5) -> torch.Tensor:
        """``[n, min(k, classes)]``: each item's most probable class indices, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SpacegraphValueError(f"k must be an int >= 1, got {k!r}")
        return self.probabilities.topk(min(k, len(self.class_names)), dim=1).indices

    def _checked(self, labels: Any) -> torch.Tensor:
        found = _labels(labels)
        if len(found) != len(self.probabilities):
            raise SpacegraphValueError(f"{len(found)} labels for {len(self.probabilities)} classified items")
        if bool(((found < 0) | (found >= len(self.class_names))).any()):
            raise SpacegraphValueError(f"labels must index the {len(self.class_names)} class names")
        return found

    def accuracy(self, labels: Any, k: int = 1) -> float:
        """Share of items whose true class (index into ``class_names``) is among their top ``k``."""
        found = self._checked(labels)
        return float((self.top_k(k) == found[:, None]).any(dim=1).float().mean())

    def confusion_matrix(self, labels: Any) -> torch.Tensor:
        """``[classes, classes]`` counts: row = true class, column = predicted."""
        found, classes = self._checked(labels), len(self.class_names)
        return torch.bincount(found * classes + self.predicted, minlength=classes * classes).reshape(classes, classes)

    def mean_per_class_recall(self, labels: Any) -> float:
        """The mean over the classes present of each one's top-1 recall (CLIP_benchmark's balanced accuracy)."""
        matrix = self.confusion_matrix(labels).float()
        present = matrix.sum(dim=1) > 0
        return float((matrix.diagonal()[present] / matrix.sum(dim=1)[present]).mean())
