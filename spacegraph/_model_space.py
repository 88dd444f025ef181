"""A base for spaces backed by a torch module: device moves, the fingerprint, and the Hugging Face folder layout."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn
from typing_extensions import Self

from ._errors import SpacegraphError, SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._hub import HubDownload, HubMixin
from ._space import Space, fingerprint_state_dict
from ._weights import tensor_problem


class ModelSpace(Space, HubMixin):
    """A space whose embeddings come from the torch module ``self.model``.

    :meth:`to` moves the module and :meth:`model_fingerprint` hashes its weights with :meth:`preprocessing`, every
    setting outside the weights that changes an embedding. A space whose weights spacegraph defines returns its
    ``config.json`` from :meth:`pretrained_config`, takes a folder as its first argument, and gets
    :meth:`save_pretrained` / :meth:`from_pretrained` / :meth:`push_to_hub` (:class:`HubMixin`, as bridges) in the
    Hugging Face layout (``config.json`` + ``model.safetensors``; ``from_pretrained``'s keywords go to the
    constructor). A space wrapping another library's model sets ``LIBRARY`` instead:
    its constructor takes a Hub repo id or folder, which that library's own ``from_pretrained`` resolves.
    """

    model: nn.Module
    LIBRARY: ClassVar[str | None] = None
    CONFIG_FILE: ClassVar[str] = "config.json"
    WEIGHTS_FILE: ClassVar[str] = "model.safetensors"
    HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE)
    HUB_FOLDER = "model"

    def preprocessing(self) -> Any:
        """Every setting outside the weights that changes an embedding (image size and mean, tokenizer, sample
        rate, ...), as JSON-serialisable data for the fingerprint; None when the weights alone decide."""
        return None

    def model_fingerprint(self) -> str:
        """A hash of the module's weights and of :meth:`preprocessing`: the space's ``spec.fingerprint``."""
        return fingerprint_state_dict(self.model.state_dict(), preprocessing=self.preprocessing())

    @contextlib.contextmanager
    def _loading(self, source: Any) -> Iterator[None]:
        """Where ``LIBRARY`` loads ``source``: its own exceptions (a missing or damaged model folder, an unknown
        repo id, a broken config) become a spacegraph error naming the space and the source, the library's error
        kept as ``__cause__``; spacegraph's own and missing extras pass through."""
        try:
            yield
        except (SpacegraphError, ImportError):
            raise
        except Exception as err:  # each library raises its own kinds: OSError, ValueError, JSONDecodeError, ...
            kind = SpacegraphFileNotFoundError if isinstance(err, FileNotFoundError) else SpacegraphValueError
            reason = (str(err).strip().splitlines() or [""])[0]
            raise kind(
                f"{type(self).__name__}: {self.LIBRARY} could not load {str(source)!r} ({type(err).__name__}: "
                f"{reason}); give a folder holding a complete model, or a repo id found in the Hub cache or online"
            ) from err

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

    def _pretrained_writer(self, source: str) -> Callable[[Path], None]:
        """``config.json`` and ``model.safetensors``, refused before anything is written unless finite."""
        config = self.pretrained_config()
        state = {key: value.detach().cpu().contiguous() for key, value in self.model.state_dict().items()}
        problems = [problem for key in sorted(state) if (problem := tensor_problem(key, state[key]))]
        if problems:
            raise SpacegraphValueError(
                f"{self.name}: {'; '.join(problems[:5])}: a saved space needs finite weights and statistics"
            )

        def write(folder: Path) -> None:
            (folder / self.CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            save_file(state, str(folder / self.WEIGHTS_FILE), metadata={"format": "pt"})

        return write

    @classmethod
    def _resolve_pretrained(cls, source: str | os.PathLike, download: HubDownload) -> Any:
        """A ``LIBRARY`` space passes ``source`` to its constructor, where that library resolves it."""
        if cls.LIBRARY is None:
            return super()._resolve_pretrained(source, download)
        if download.given():
            dropped = ", ".join(f"{name}=" for name in download.given())
            raise SpacegraphValueError(
                f"{cls.__name__} loads through {cls.LIBRARY}, which resolves repo ids itself: drop {dropped} "
                "(set HF_HUB_CACHE for another cache)"
            )
        return source

    @classmethod
    def _from_folder(cls, folder: str | os.PathLike, **kwargs: Any) -> Self:
        """The space rebuilt by its constructor, which takes the folder (or a ``LIBRARY`` repo id) first."""
        construct: Callable[..., Self] = cls
        return construct(folder, **kwargs)
