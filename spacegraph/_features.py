"""A feature cache: (space, modality, dataset) -> checksummed safetensors shards plus a JSON manifest.

Extraction is resumable (finished, verified shards are kept), can be shared out over the ranks of a ``torchrun``
launch, and a second run reuses the cache; a cache made from other weights or other inputs is detected by fingerprint
and by an exact digest of the inputs, and extracted again. The files themselves are ``_feature_cache``'s.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from tqdm.auto import tqdm

from ._arguments import checked_arguments
from ._atomic import write_text_atomic
from ._batching import batch_length
from ._checks import check_count
from ._distributed import ensure_process_group, on_every_rank, on_first_rank
from ._errors import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError
from ._feature_cache import (
    MANIFEST,
    OWN_FILE,
    OWN_TEMP,
    PROGRESS_FILE,
    DamagedCache,
    FeatureHeader,
    FeatureManifest,
    RankProgress,
    ShardEntry,
    make_dir,
    progress_entries,
    progress_name,
    rank_share,
    read_manifest,
    read_progress,
    read_shard,
    remove_own,
    unowned_files,
    write_shard,
)
from ._inputs_digest import inputs_digest
from ._modality import Modality, as_modality
from ._names import check_path_name, path_component
from ._space import Space, check_embeddings

logger = logging.getLogger(__name__)

LOCKS = ".locks"  # the store's lock files, one per dataset, under root (as in huggingface_hub's cache)

# (shard index, progress bar or None) -> the shard's checked float32 embeddings
_ShardEncoder = Callable[[int, "tqdm | None"], torch.Tensor]


def _encode_options(space: Space, batch_size: int, num_workers: int | None, precision: str | None) -> dict[str, Any]:
    """Keyword arguments for ``space.encode``; ``num_workers`` and ``precision`` only when given."""
    options: dict[str, Any] = {"batch_size": batch_size}
    accepted = inspect.signature(space.encode).parameters
    for name, value in (("num_workers", num_workers), ("precision", precision)):
        if value is not None and name not in accepted:
            raise SpacegraphTypeError(f"space {space.name!r} takes no {name} in encode; leave {name} unset")
        if value is not None:
            options[name] = value
    return options


class FeatureStore:
    """Cached embeddings under ``root/<space>/<modality>/<dataset>/``: ``manifest.json`` plus
    ``shard-NNNNN.safetensors`` files, each recorded in the manifest with its row count and sha256.

    - Names: the space name becomes one safe folder name (``path_component``), the dataset name must be one
      (``check_path_name``), so nothing is ever written or removed outside ``root``.
    - Integrity: every shard is verified when read. :meth:`encode` extracts a damaged shard (or manifest) again with
      a warning; :meth:`load`, which has no inputs, refuses it with a ValueError.
    - Concurrency: a process holds a file lock (``root/.locks/<space>/<modality>/<dataset>.lock``) while it encodes
      or loads a dataset, so concurrent writers are serialised and each gets the rows of its own inputs. In a
      distributed :meth:`encode` rank 0 holds it for the whole group.
    - Distributed (``torchrun``): shard i of a fresh run goes to rank i mod N; each rank writes its shards and
      records them in its own ``progress-AAAAA-rank-RRRRR.json``; after every rank is done rank 0 writes the
      manifest and removes the progress files. Several machines need ``root`` on a shared file system.
    - Crashes: shards, manifest and progress files are written atomically; after a kill, :meth:`encode` (with any
      number of processes) keeps every shard on record whose checksum still matches, extracts only the others and
      removes the killed run's temp files.
    - Deletion: the store removes only the files it writes itself (its manifest, shards, progress files and their
      temp files), and a dataset folder left empty by a failed first extraction.
      When a dataset folder holds features of other weights or inputs, those are replaced and any other file in
      it is left in place. A damaged manifest is the cache's own when it still begins like one, is empty, or sits
      beside the cache's shards; any other ``manifest.json`` is foreign: the folder is refused with a ValueError and
      left untouched.
    """

    @checked_arguments
    def __init__(self, root: str | os.PathLike, *, shard_rows: int = 4096) -> None:
        self.shard_rows = check_count("shard_rows", shard_rows)
        self.root = Path(root)

    def folder(self, space_name: str, modality: Modality | str, dataset: str) -> Path:
        """``root/<space>/<modality>/<dataset>``; refused where a folder below ``root`` on the way is a symbolic
        link, through which the store would write outside its root."""
        dataset = check_path_name(dataset, "dataset name")
        folder = self.root / path_component(space_name) / as_modality(modality).value / dataset
        for path in (folder.parent.parent, folder.parent, folder):
            if path.is_symlink():
                raise SpacegraphValueError(
                    f"{path} is a symbolic link: the feature store reads and writes only in real folders below its "
                    f"root {self.root}; replace the link with a folder, or make its target the root"
                )
        return folder

    def _lock(self, folder: Path) -> FileLock:
        lock = self.root / LOCKS / folder.relative_to(self.root).parent / f"{folder.name}.lock"
        make_dir(lock.parent)
        return FileLock(lock)

    @contextlib.contextmanager
    def _cleaned_on_failure(self, folder: Path) -> Iterator[None]:
        """On an error, remove ``folder`` and the folders above it below ``root`` while they are empty, so that a
        failed first extraction leaves no empty dataset folder behind."""
        try:
            yield
        except BaseException:
            for path in [folder, *folder.parents]:
                if path == self.root or self.root not in path.parents:
                    break
                with contextlib.suppress(OSError):  # not empty, or already gone
                    path.rmdir()
            raise

    @staticmethod
    def _bar(fresh: FeatureManifest, rows: int, show: bool) -> contextlib.AbstractContextManager[tqdm | None]:
        """One progress bar over the ``rows`` this process reads or extracts (none unless ``show``)."""
        if not show:
            return contextlib.nullcontext()
        what = f"{fresh.space}:{fresh.modality.value} {fresh.dataset}"
        return tqdm(total=rows, desc=what, unit="item", unit_scale=True, dynamic_ncols=True)

    @checked_arguments
    def encode(
        self,
        space: Space,
        modality: Modality | str,
        dataset: str,
        inputs: Any,
        *,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        num_workers: int | None = None,
        precision: str | None = None,
        distributed: bool = True,
    ) -> torch.Tensor:
        """Embeddings of ``inputs`` by ``space``, extracted once and read from the cache afterwards.

        ``show_progress_bar``: one bar over the dataset's rows (this rank's share under ``torchrun``), advanced per
        batch, resumed shards included. ``num_workers`` and ``precision`` go to :meth:`Space.encode` when given; a
        precision other than "fp32" is part of the cache's fingerprint. Under ``torchrun`` with several processes (or in an initialised default process
        group of several ranks) every rank must call this with the same arguments: the ranks share out the shards,
        write exactly the files one process would write, and each returns all the features. ``distributed=False``
        makes this process extract alone, e.g. when only one rank of a training job calls it.
        """
        modality = space.check_modality(modality)
        folder = self.folder(space.name, modality, dataset)
        n_items = batch_length(inputs)
        if n_items == 0:
            raise SpacegraphValueError(f"no {modality.value} inputs for dataset {dataset!r}; pass at least one item")
        options = _encode_options(space, batch_size, num_workers, precision)  # before hashing the inputs
        counts_batches = "progress_bar" in inspect.signature(space.encode).parameters
        fresh = FeatureManifest(
            space=space.name,
            fingerprint=space.spec.fingerprint + ("" if precision in (None, "fp32") else f"+{precision}"),
            modality=modality,
            dataset=dataset,
            inputs_digest=inputs_digest(inputs, modality),
            n_items=n_items,
            dim=space.spec.dim,
            shard_rows=self.shard_rows,
        )

        def encode_shard(index: int, bar: tqdm | None) -> torch.Tensor:
            rows = inputs[index * self.shard_rows : (index + 1) * self.shard_rows]
            per_batch = {"progress_bar": bar} if bar is not None and counts_batches else {}
            return self._checked(space.encode(modality, rows, **options, **per_batch), len(rows), space, modality)

        rank, world_size = ensure_process_group() if distributed else (0, 1)
        if world_size > 1:
            return self._encode_distributed(folder, fresh, encode_shard, rank, world_size, show_progress_bar)
        with self._lock(folder), self._cleaned_on_failure(folder), self._bar(fresh, n_items, show_progress_bar) as bar:
            manifest, recorded, _ = self._resume_or_restart(folder, fresh)
            chunks = []
            for index in range(fresh.n_shards):
                entry, embeddings = self._verified_or_encoded(folder, fresh, index, recorded, encode_shard, bar)
                chunks.append(embeddings)
                if manifest.shards[index : index + 1] != [entry]:
                    manifest.shards[index : index + 1] = [entry]
                    write_text_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
            remove_own(folder, PROGRESS_FILE)
        return torch.cat(chunks)

    def _encode_distributed(
        self,
        folder: Path,
        fresh: FeatureManifest,
        encode_shard: _ShardEncoder,
        rank: int,
        world_size: int,
        show_progress_bar: bool,
    ) -> torch.Tensor:
        """One rank's part of a distributed :meth:`encode`. Rank 0 takes the dataset's lock for the whole group and
        reads what is on record; each rank verifies or extracts every ``world_size``-th shard, recording each shard it
        writes in its own progress file; rank 0 then writes the manifest and removes the progress files, and every
        rank reads the others' shards. A failure on any rank is raised on all of them."""
        what = f"feature extraction into {folder}"
        headers = on_every_rank(fresh.header, what)
        differing = next((other for other in headers if other != headers[0]), None)
        if differing is not None:
            fields = sorted(key for key in headers[0] if headers[0][key] != differing[key])
            raise SpacegraphValueError(
                f"{what}: every rank must pass the same space, inputs and shard_rows; the ranks differ in {fields} "
                "(to extract in one process alone, pass distributed=False)"
            )
        with contextlib.ExitStack() as held:

            def plan() -> dict[str, Any]:
                held.enter_context(self._lock(folder))
                held.enter_context(self._cleaned_on_failure(folder))
                _, recorded, attempt = self._resume_or_restart(folder, fresh)
                return {"recorded": {str(index): sorted(shas) for index, shas in recorded.items()}, "attempt": attempt}

            planned = on_first_rank(plan, what)
            recorded = {int(index): set(shas) for index, shas in planned["recorded"].items()}
            progress_file = folder / progress_name(planned["attempt"], rank)
            local: dict[int, torch.Tensor] = {}

            def extract() -> dict[str, str]:
                progress, shas = RankProgress.model_validate(fresh.header()), {}
                share = rank_share(fresh.n_shards, recorded, rank, world_size)
                rows = sum(fresh.rows_in(index) for index in share)
                with self._bar(fresh, rows, show_progress_bar) as bar:
                    for index in share:
                        entry, local[index] = self._verified_or_encoded(
                            folder, fresh, index, recorded, encode_shard, bar
                        )
                        shas[str(index)] = entry.sha256
                        if entry.sha256 not in recorded.get(index, ()):
                            progress.done[index] = entry
                            write_text_atomic(progress_file, progress.model_dump_json(indent=2))
                return shas

            shas = {int(index): sha for part in on_every_rank(extract, what) for index, sha in part.items()}
            manifest = fresh.model_copy(
                update={"shards": [fresh.shard_entry(i, shas[i]) for i in range(fresh.n_shards)]}
            )

            def merge() -> None:
                write_text_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2))
                remove_own(folder, PROGRESS_FILE)

            on_first_rank(merge, what)
            features: list[torch.Tensor] = []

            def assemble() -> None:
                chunks = [
                    local[index] if index in local else read_shard(folder, manifest, index, {entry.sha256})[1]
                    for index, entry in enumerate(manifest.shards)
                ]
                features.append(torch.cat(chunks))

            on_every_rank(assemble, what)
        return features[0]

    @staticmethod
    def _verified_or_encoded(
        folder: Path,
        header: FeatureHeader,
        index: int,
        recorded: dict[int, set[str]],
        encode_shard: _ShardEncoder,
        bar: tqdm | None,
    ) -> tuple[ShardEntry, torch.Tensor]:
        """Shard ``index`` read back when it is on record and intact, else extracted and written; ``bar`` (if any)
        advances by its rows either way."""
        done = bar.n if bar is not None else 0
        found = None
        if index in recorded:
            try:
                found = read_shard(folder, header, index, recorded[index])
            except DamagedCache as err:
                logger.warning("%s; extracting its rows again", err)
        if found is None:
            embeddings = encode_shard(index, bar)
            found = write_shard(folder, header, index, embeddings), embeddings
        if bar is not None:
            bar.update(done + len(found[1]) - bar.n)  # exact, whatever the space counted
        return found

    @staticmethod
    def _checked(embeddings: torch.Tensor, n_rows: int, space: Space, modality: Modality) -> torch.Tensor:
        what = f"space {space.name!r} {modality.value} embeddings for the feature cache"
        embeddings = check_embeddings(embeddings, space.spec.dim, what).to(torch.float32)
        if len(embeddings) != n_rows:
            raise SpacegraphValueError(f"{what}: {len(embeddings)} rows for {n_rows} inputs")
        return embeddings

    @staticmethod
    def _resume_or_restart(folder: Path, fresh: FeatureManifest) -> tuple[FeatureManifest, dict[int, set[str]], int]:
        """When every record in the folder (manifest, progress files of distributed runs) is for the same features as
        ``fresh``: the manifest (else ``fresh``), the sha256 values on record for each shard, and the number of the
        next distributed run. Otherwise ``fresh``, no record and run 1, after removing the cache files there. Called
        under the lock, so temp files in the folder are a killed run's."""
        make_dir(folder)
        unowned = unowned_files(folder)
        if unowned:
            raise SpacegraphValueError(
                f"{folder} holds {', '.join(unowned[:5])}: named like the feature cache's own files, but not written "
                "by it; the store writes and removes only its own files: move them away, or use another cache root "
                "or dataset name"
            )
        try:
            manifest = read_manifest(folder)
        except DamagedCache as err:
            logger.warning("%s; extracting again", err)
            manifest = None
        remove_own(folder, OWN_TEMP)
        progress = read_progress(folder)
        records = ([manifest] if manifest is not None else []) + [record for _, record in progress]
        if records and all(record.header() == fresh.header() for record in records):
            recorded: dict[int, set[str]] = {}
            for index, entry in [*enumerate(manifest.shards if manifest else []), *progress_entries(progress)]:
                recorded.setdefault(index, set()).add(entry.sha256)
            return manifest or fresh, recorded, 1 + max((attempt for attempt, _ in progress), default=0)
        if manifest is not None or progress:
            logger.info("feature cache %s was made from other weights or inputs; extracting again", folder)
        remove_own(folder, OWN_FILE)
        return fresh, {}, 1

    @checked_arguments
    def load(self, space_name: str, modality: Modality | str, dataset: str) -> torch.Tensor:
        """Read a finished cache, verifying every shard; refuses a missing, incomplete or damaged one."""
        folder = self.folder(space_name, modality, dataset)
        if not (folder / MANIFEST).is_file():
            raise SpacegraphFileNotFoundError(
                f"no cached features at {folder}; extract them with FeatureStore.encode first"
            )
        with self._lock(folder):
            try:
                manifest = read_manifest(folder)
                if manifest is None:
                    raise DamagedCache(f"feature cache manifest {folder / MANIFEST} was removed")
                found = (manifest.space, manifest.modality.value, manifest.dataset)
                if found != (space_name, as_modality(modality).value, dataset):
                    raise SpacegraphValueError(f"{folder / MANIFEST} is for (space, modality, dataset) {found}")
                if manifest.rows_done < manifest.n_items:
                    raise SpacegraphValueError(
                        f"cache {folder} is incomplete ({manifest.rows_done}/{manifest.n_items} rows); run encode again"
                    )
                shards = [
                    read_shard(folder, manifest, index, {entry.sha256}) for index, entry in enumerate(manifest.shards)
                ]
                return torch.cat([embeddings for _, embeddings in shards])
            except DamagedCache as err:
                raise SpacegraphValueError(
                    f"{err}; run FeatureStore.encode with the same inputs to extract it again"
                ) from err
