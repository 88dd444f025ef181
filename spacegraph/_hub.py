"""The Hugging Face Hub: a local folder or a repo id resolved through huggingface_hub's cache (offline-aware),
uploads, :class:`HubMixin` (one save/load/push for bridges and model spaces), and the ``README.md`` model card of
a bridge. huggingface_hub is imported on use, never with spacegraph."""

from __future__ import annotations

import json
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from typing_extensions import Self

from ._arguments import checked_arguments
from ._atomic import OWNERSHIP, atomic_dir, recover_interrupted_save
from ._errors import MissingExtraError, SpacegraphFileNotFoundError, SpacegraphValueError
from ._optional import require

if TYPE_CHECKING:
    from ._bridge import BridgeCard

HUB_EXTRA = "hub"


@dataclass(frozen=True)
class HubDownload:
    """How a repo id is fetched: ``huggingface_hub.hf_hub_download``'s ``revision``, ``cache_dir``, ``token``,
    ``force_download`` and ``local_files_only``."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    token: str | bool | None = None
    force_download: bool = False
    local_files_only: bool = False

    def given(self) -> list[str]:
        """The options set away from their defaults."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]


LICENSE_KEYS = ("data_license", "license")  # where older cards' training dicts record the licence of their data
MAX_REPO_ID = 96  # characters, as the Hub allows
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "name" or "org/name", as the Hub spells them
LONGEST_CELL = 120  # characters of a training setting shown in the card's table


def resolve_folder(
    source: str | os.PathLike,
    files: Collection[str],
    *,
    what: str,
    download: HubDownload = HubDownload(),
) -> Path:
    """The local folder holding ``files`` for ``source``: an existing folder as it is, else a Hub repo id
    (``org/name``) looked up through huggingface_hub (as ``download`` says): its cache first, downloaded unless
    ``HF_HUB_OFFLINE`` is set. A ``Path`` is always a local folder. ``what`` names the artifact in errors."""
    folder = Path(source)
    recover_interrupted_save(folder)  # a save killed between the renames of its swap
    if folder.is_dir() or isinstance(source, os.PathLike):
        return check_folder(folder, files, what)
    if not REPO_ID.fullmatch(str(source)):
        raise SpacegraphFileNotFoundError(
            f"{source}: no such folder, and not a Hub repo id ('org/name'); give the folder of a saved {what} or "
            "a repo id"
        )
    try:
        return _download(str(source), files, what=what, download=download)
    except MissingExtraError as err:
        raise MissingExtraError(f"{source}: no such folder; to read it as a Hub repo id, {err}") from err


def check_folder(folder: Path, files: Collection[str], what: str) -> Path:
    """``folder``, if it holds every one of ``files``; else an error naming the missing ones."""
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise SpacegraphFileNotFoundError(
            f"{folder}: no {', '.join(missing)} there; a {what} folder holds {', '.join(files)}"
        )
    return folder


def _download(repo_id: str, files: Iterable[str], *, what: str, download: HubDownload) -> Path:
    """The snapshot folder of ``repo_id`` holding ``files`` (all of one revision), from the cache or the Hub."""
    hub = require("huggingface_hub", HUB_EXTRA)
    errors = require("huggingface_hub.errors", HUB_EXTRA)  # submodules are not attributes until imported
    options = {f.name: getattr(download, f.name) for f in fields(download)}
    try:
        paths = [hub.hf_hub_download(repo_id, name, **options) for name in files]
    except errors.HFValidationError as err:
        raise SpacegraphValueError(
            f"{repo_id!r} is neither a local folder nor a Hub repo id ('org/name'): {err}"
        ) from err
    except (errors.EntryNotFoundError, errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as err:
        offline = " (HF_HUB_OFFLINE is set: only the local cache was searched)" if hub.is_offline_mode() else ""
        raise SpacegraphFileNotFoundError(
            f"{repo_id!r} is not a local folder, and the Hub repo {repo_id!r} with the {what} files "
            f"{', '.join(files)} was not found{offline}: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    return Path(paths[0]).parent


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Upload ``folder`` to the Hub model repo ``repo_id`` (created if missing) with ``HfApi.upload_folder``
    (``revision``, ``commit_message``, ``create_pr`` as there); returns its commit info."""
    if not REPO_ID.fullmatch(repo_id) or len(repo_id) > MAX_REPO_ID:
        raise SpacegraphValueError(
            f"{repo_id!r} is not a Hub repo id: 'name' or 'org/name', letters, digits, '-', '_' and '.', at most "
            f"{MAX_REPO_ID} characters"
        )
    hub = require("huggingface_hub", HUB_EXTRA)
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message or f"Upload {Path(folder).name} with spacegraph",
            create_pr=create_pr,
            # the local records of what a save wrote, its own and those of saves inside it (a graph's bridges): a
            # downloaded copy is not a save
            ignore_patterns=[OWNERSHIP, f"*/{OWNERSHIP}"],
        )
    except OSError as err:  # offline, unreachable, refused (huggingface_hub's HTTP errors are OSErrors)
        raise SpacegraphValueError(
            f"cannot push to the Hub repo {repo_id!r}: {type(err).__name__}: {str(err).splitlines()[0]}; check the "
            "network, HF_HUB_OFFLINE and the token"
        ) from err


class HubMixin(ABC):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` in one folder layout, as huggingface_hub's
    ``ModelHubMixin`` gives them to models. A class names its files and implements :meth:`_pretrained_writer`
    (check, then return what fills the folder) and :meth:`_from_folder` (read a resolved folder)."""

    HUB_FILES: ClassVar[tuple[str, ...]]  # what a folder must hold (and from_pretrained downloads)
    HUB_FOLDER: ClassVar[str]  # the folder's name in an upload (and its commit message)

    @classmethod
    def _hub_label(cls) -> str:
        """What errors call the artifact."""
        return cls.__name__

    @abstractmethod
    def _pretrained_writer(self, source: str) -> Callable[[Path], None]:
        """Refuse what cannot be saved (before anything is written); else a function filling a new folder.
        ``source`` is where readers will find it: the repo id of a push, else the folder."""

    @classmethod
    @abstractmethod
    def _from_folder(cls, folder: Any, **kwargs: Any) -> Self:
        """The artifact read from a resolved local folder."""

    @checked_arguments
    def save_pretrained(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the folder atomically (all or nothing). An existing ``folder`` is replaced only if it holds nothing
        but what a spacegraph save wrote there, unchanged, or if ``overwrite`` (see
        :func:`spacegraph.plugin.atomic_dir`)."""
        return self._save_pretrained(folder, source=str(folder), overwrite=overwrite)

    def _save_pretrained(self, folder: str | os.PathLike, *, source: str, overwrite: bool = False) -> Path:
        write = self._pretrained_writer(source)
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            write(tmp)
        return Path(folder)

    @classmethod
    @checked_arguments
    def from_pretrained(
        cls,
        folder_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Load a local folder or a Hub repo (``org/name``), found through the huggingface_hub cache or downloaded
        unless ``HF_HUB_OFFLINE`` is set (``revision``, ``cache_dir``, ``token``, ``force_download`` and
        ``local_files_only`` as in ``hf_hub_download``); ``kwargs`` go to the loader."""
        download = HubDownload(revision, cache_dir, token, force_download, local_files_only)
        return cls._from_folder(cls._resolve_pretrained(folder_or_repo_id, download), **kwargs)

    @classmethod
    def _resolve_pretrained(cls, source: str | os.PathLike, download: HubDownload) -> Any:
        """What :meth:`_from_folder` reads for ``source``: the local folder holding ``HUB_FILES``."""
        return resolve_folder(source, cls.HUB_FILES, what=cls._hub_label(), download=download)

    @checked_arguments
    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Upload :meth:`save_pretrained`'s folder to the Hub model repo ``repo_id`` (created if missing) with
        ``huggingface_hub.HfApi.upload_folder`` (``revision``, ``commit_message``, ``create_pr`` as there); returns
        its commit info."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self._save_pretrained(Path(tmp) / self.HUB_FOLDER, source=repo_id)
            return push_folder(
                folder,
                repo_id,
                token=token,
                private=private,
                revision=revision,
                commit_message=commit_message,
                create_pr=create_pr,
            )


def data_license(card: BridgeCard) -> str | None:
    """The licence of the data a bridge was trained on: its card's ``data_license``, else what an older card's
    training dict records."""
    if card.data_license:
        return card.data_license
    for key in LICENSE_KEYS:
        value = card.training.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def eval_results(card: BridgeCard) -> list[Any]:
    """The card's measured qualities as ``model-index`` entries (huggingface_hub ``EvalResult``): the label-free
    estimate, the held-out matching and the probe calibration, each on what it was measured on."""
    hub = require("huggingface_hub", HUB_EXTRA)
    task = {"task_type": "retrieval", "task_name": f"retrieval through {card.overlap.value}"}
    measured = [
        ("estimate", "training data (label-free)", "spacegraph-estimate", "map", "estimated mAP"),
        ("held_out_R@1", f"held-out {card.overlap.value} data", "spacegraph-held-out", "recall_at_1", "R@1"),
    ]
    results = [
        hub.EvalResult(**task, dataset_name=data, dataset_type=kind, metric_type=metric, metric_name=name,
                       metric_value=round(card.quality[key], 4))
        for key, data, kind, metric, name in measured
        if key in card.quality
    ]  # fmt: skip
    if card.calibration is not None:
        probe = card.calibration
        results.append(
            hub.EvalResult(**task, dataset_name=probe.probe, dataset_type="spacegraph-probe", metric_type="map",
                           metric_name=f"route mAP ({probe.route})", metric_value=round(probe.route_measured, 4))
        )  # fmt: skip
    return results


def _license_fields(licence: str | None) -> dict[str, str]:
    """The card's ``license`` front matter: a licence id as the Hub spells it (lowercase), or ``other`` with the
    text as ``license_name`` (e.g. several datasets' licences)."""
    if licence is None:
        return {}
    if re.fullmatch(r"[A-Za-z0-9.+-]+", licence):
        return {"license": licence.lower()}
    return {"license": "other", "license_name": licence}


def bridge_readme(card: BridgeCard, source: str) -> str:
    """A Hugging Face model card for a bridge: YAML front matter (licences, tags, ``model-index`` metrics), then its
    spaces and their fingerprints, the overlap, the training config, the data's row counts and licence, its measured
    quality with the source, and how to load it from ``source`` (a repo id or folder)."""
    hub = require("huggingface_hub", HUB_EXTRA)
    licence = data_license(card)
    modalities = sorted({m.value for ref in card.spaces for m in ref.modalities})
    results = eval_results(card)
    metadata = hub.ModelCardData(
        library_name="spacegraph",
        **_license_fields(card.license or licence),  # trained weights carry their data's terms unless told otherwise
        tags=["spacegraph", "bridge", card.method, card.kind, *modalities],
        model_name=card.name if results else None,
        eval_results=results or None,
        data_license=licence,
    )
    sections = [
        f"# Bridge `{card.name}`",
        _summary(card),
        "## Spaces\n\n" + _table(["space", "fingerprint", "dim", "modalities", "head"], _space_rows(card)),
        f"## Overlap\n\nTrained on `{card.overlap.value}` data both spaces embed.",
        "## Training\n\n" + _table(["setting", "value"], [(k, _value(v)) for k, v in sorted(card.training.items())]),
        "## Data\n\n" + _data_text(card, licence),
        "## Measured quality\n\n" + _quality_text(card),
        "## Use\n\n" + _usage(card, source),
    ]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def _summary(card: BridgeCard) -> str:
    x, y = (ref.name for ref in card.spaces)
    joins = f"joins `{x}` and `{y}` in a new joint space `{card.name}`"
    if card.kind == "extend":
        joins = f"maps `{x}` into `{y}`, which stays frozen"
    return (
        f"A spacegraph {card.kind} bridge: it {joins}, through "
        f"`{card.overlap.value}`. Method `{card.method}`, spacegraph {card.library_version}, format "
        f"{card.format_version}. Loading it checks each space's fingerprint, so it only runs on the spaces below."
    )


def _space_rows(card: BridgeCard) -> list[tuple[Any, ...]]:
    rows = []
    for ref in card.spaces:
        head = card.heads.get(ref.name)
        described = f"{head.arch} {head.in_dim}->{head.out_dim}" if head else "none (frozen target)"
        rows.append((ref.name, ref.fingerprint, ref.dim, ", ".join(m.value for m in ref.modalities), described))
    return rows


def _data_text(card: BridgeCard, licence: str | None) -> str:
    rows = _table(["features", "rows"], sorted(card.data.items())) if card.data else "Row counts: not recorded."
    where = "set `card.data_license`"
    licensed = f"Licence of the data: {licence}." if licence else f"Licence of the data: not recorded ({where})."
    return f"{rows}\n\n{licensed}"


def _quality_text(card: BridgeCard) -> str:
    lines = [f"Planner score: {card.score:.4f} (source: {card.score_source})."]
    if card.quality:
        lines.append(_table(["measure", "value"], [(k, f"{v:.4g}") for k, v in sorted(card.quality.items())]))
    if card.calibration is not None:
        calibration = card.calibration
        lines.append(
            f"Calibrated on probe `{calibration.probe}` ({calibration.n_queries} queries, {calibration.n_gallery} "
            f"gallery items): route {calibration.route} measured {calibration.route_measured:.4f} against "
            f"{calibration.route_expected:.4f} expected; rule `{calibration.rule}`."
        )
    return "\n\n".join(lines)


def _usage(card: BridgeCard, source: str) -> str:
    return (
        "```python\nimport spacegraph as sg\n\n"
        f"bridge = sg.Bridge.from_pretrained({source!r})\n"
        f"graph = sg.SpaceGraph([...], [bridge])  # the spaces {', '.join(repr(ref.name) for ref in card.spaces)}\n"
        "```"
    )


def _value(value: Any) -> str:
    """A training setting for a table cell; a long one (e.g. a loss history) is summarised, bridge.json has it."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) <= LONGEST_CELL:
        return text
    size = f"{len(value)} entries" if isinstance(value, (list, dict)) else f"{len(text)} characters"
    return f"({size}: see bridge.json)"


def _table(header: list[str], rows: Iterable[tuple[Any, ...]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
