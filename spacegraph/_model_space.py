"""A base for spaces backed by a torch module: device moves, the fingerprint, and the Hugging Face folder layout."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn
from typing_extensions import Self

from ._atomic import atomic_dir
from ._errors import SpacegraphTypeError, SpacegraphValueError
from ._hub import push_folder, resolve_folder
from ._space import Space, fingerprint_state_dict
from ._weights import tensor_problem


class ModelSpace(Space):
    """A space whose embeddings come from the torch module ``self.model``.

    :meth:`to` moves the module and :meth:`model_fingerprint` hashes its weights with :meth:`preprocessing`, every
    setting outside the weights that changes an embedding. A space whose weights spacegraph defines returns its
    ``config.json`` from :meth:`pretrained_config`, takes a folder as its first argument, and gets
    :meth:`save_pretrained` / :meth:`from_pretrained` / :meth:`push_to_hub` in the Hugging Face layout
    (``config.json`` + ``model.safetensors``). A space wrapping another library's model sets ``LIBRARY`` instead:
    its constructor takes a Hub repo id or folder, which that library's own ``from_pretrained`` resolves.
    """

    model: nn.Module
    LIBRARY: ClassVar[str | None] = None
    CONFIG_FILE: ClassVar[str] = "config.json"
    WEIGHTS_FILE: ClassVar[str] = "model.safetensors"

    def preprocessing(self) -> Any:
        """Every setting outside the weights that changes an embedding (image size and mean, tokenizer, sample
        rate, ...), as JSON-serialisable data for the fingerprint; None when the weights alone decide."""
        return None

    def model_fingerprint(self) -> str:
        """A hash of the module's weights and of :meth:`preprocessing`: the space's ``spec.fingerprint``."""
        return fingerprint_state_dict(self.model.state_dict(), preprocessing=self.preprocessing())

    def to(self, device: str | torch.device) -> Self:
        super().to(device)
        self.model.to(self.device)
        return self

    def pretrained_config(self) -> dict[str, Any]:
        """The ``config.json`` that rebuilds this space's module around its weights (with the constructor)."""
        raise SpacegraphTypeError(
            f"{type(self).__name__} loads its model through {self.LIBRARY or 'another library'}, which saves it; "
            "save_pretrained writes spaces whose weights spacegraph defines (config.json + model.safetensors)"
        )

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder``, atomically (all or nothing). An existing
        ``folder`` is replaced only if it holds nothing else (see :func:`spacegraph.plugin.atomic_dir`)."""
        config = self.pretrained_config()
        state = {key: value.detach().cpu().contiguous() for key, value in self.model.state_dict().items()}
        problems = [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]
        if problems:
            raise SpacegraphValueError(
                f"{self.name}: {'; '.join(problems[:5])}: a saved space needs finite weights and statistics"
            )
        with atomic_dir(folder, own=(self.CONFIG_FILE, self.WEIGHTS_FILE)) as tmp:
            (tmp / self.CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            save_file(state, str(tmp / self.WEIGHTS_FILE), metadata={"format": "pt"})
        return Path(folder)

    @classmethod
    def from_pretrained(
        cls,
        folder_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Self:
        """The space saved in a local folder or a Hub repo (``org/name``, through the huggingface_hub cache,
        offline-aware; ``revision`` and ``cache_dir`` as there); ``kwargs`` go to the constructor. A ``LIBRARY``
        space passes ``folder_or_repo_id`` to its constructor, where that library resolves it."""
        construct: Callable[..., Self] = cls  # subclasses take the folder or repo id first
        if cls.LIBRARY is not None:
            if revision is not None or cache_dir is not None:
                raise SpacegraphValueError(
                    f"{cls.__name__} loads through {cls.LIBRARY}, which resolves repo ids itself: drop revision= and "
                    "cache_dir= (set HF_HUB_CACHE for another cache)"
                )
            return construct(folder_or_repo_id, **kwargs)
        folder = resolve_folder(
            folder_or_repo_id,
            (cls.CONFIG_FILE, cls.WEIGHTS_FILE),
            what=cls.__name__,
            revision=revision,
            cache_dir=cache_dir,
        )
        return construct(folder, **kwargs)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None) -> Any:
        """Upload :meth:`save_pretrained`'s folder to the Hub model repo ``repo_id`` (created if missing) with
        ``huggingface_hub.HfApi.upload_folder``; returns its commit info."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            return push_folder(folder, repo_id, token=token, private=private)
