"""Evaluation datasets for ``spacegraph eval``: adapters reading the standard layouts of public datasets.

Each adapter takes the dataset's root folder (and a few options) and returns a small dataclass: a
:class:`ClassificationSet` (task ``zeroshot``), a :class:`RetrievalSet` (``retrieval``) or a
:class:`LocalizationSet` (``localization`` and ``counterfactual``). They register under the ``spacegraph.datasets``
entry-point group (``pyproject.toml``), so ``spacegraph.load_dataset("esc50", root)`` finds them, as it finds a
plugin's. A missing file, and every malformed entry, is a clear error naming the file and the line or entry.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from spacegraph_spaces.pointcloud_io import READERS

from spacegraph import SpacegraphFileNotFoundError, SpacegraphTypeError, SpacegraphValueError

AUDIO_SUFFIXES = (".wav", ".flac")
FRAME_SUFFIXES = (".jpg", ".png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
MISSING_CHOICES = ("error", "skip")


@dataclass(frozen=True)
class ClassificationSet:
    """Items of one modality (file paths), each with a class: an index into ``class_names``."""

    name: str
    modality: str
    items: list[str]
    labels: np.ndarray
    class_names: list[str]
    tasks: ClassVar[tuple[str, ...]] = ("zeroshot",)


@dataclass(frozen=True)
class RetrievalSet:
    """Items of one modality (file paths), each with its captions; ``skipped``: entries left out (missing files)."""

    name: str
    modality: str
    items: list[str]
    captions: list[list[str]]
    skipped: int = 0
    tasks: ClassVar[tuple[str, ...]] = ("retrieval",)

    def texts(self) -> tuple[list[str], np.ndarray]:
        """Every caption, and the index of the item each one describes."""
        owners = np.asarray([i for i, captions in enumerate(self.captions) for _ in captions], dtype=np.int64)
        return [text for captions in self.captions for text in captions], owners


@dataclass(frozen=True)
class LocalizationSet:
    """Images, each with a query of another modality (file paths), the query's class and the pixel boxes
    ``[x0, y0, x1, y1]`` of where in the image its source is."""

    name: str
    query_modality: str
    queries: list[str]
    images: list[str]
    boxes: list[list[list[float]]]
    labels: np.ndarray
    class_names: list[str]
    skipped: int = 0
    tasks: ClassVar[tuple[str, ...]] = ("localization", "counterfactual")

    def counterfactual_pairs(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of ``queries``, rows of ``images`` and matched flags: each query with its own image (matched), then
        with the image of a random item of another class (mismatched), drawn with ``seed``."""
        if len(self.class_names) < 2:
            raise SpacegraphValueError(f"{self.name}: counterfactual pairs need two classes or more")
        rng = np.random.default_rng(seed)
        others = [int(rng.choice(np.flatnonzero(self.labels != label))) for label in self.labels]
        rows = np.arange(len(self.queries))
        matched = np.r_[np.ones(len(rows), bool), np.zeros(len(rows), bool)]
        return np.r_[rows, rows], np.r_[rows, others].astype(np.int64), matched


# ---------------------------------------------------------------- files


def _root(root: Any, layout: str) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise SpacegraphTypeError(f"a dataset root is a folder path, got {type(root).__name__}")
    path = Path(root)
    if not path.is_dir():
        raise SpacegraphFileNotFoundError(f"dataset root {path} is not a folder; expected {layout}")
    return path


def _file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SpacegraphFileNotFoundError(f"{what} {path} is missing")
    return path


def _first_file(folder: Path, stems: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    return next((p for stem in stems for s in suffixes if (p := folder / f"{stem}{s}").is_file()), None)


def _text(path: Path, layout: str) -> str:
    _file(path, f"{layout}:")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpacegraphValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise SpacegraphValueError(f"{path} cannot be read ({err.strerror or err})") from err


def csv_rows(path: Path, columns: Sequence[str], layout: str) -> list[tuple[str, dict[str, str]]]:
    """The rows of a CSV file whose header holds ``columns``, each as (where: "FILE, line N", fields by column)."""
    reader = csv.reader(io.StringIO(_text(path, layout)), skipinitialspace=True)
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in columns if name not in header]
        if missing:
            raise SpacegraphValueError(
                f"{path}: the header {','.join(header)!r} lacks {', '.join(missing)}; expected {layout}"
            )
        rows = [(f"{path}, line {reader.line_num}", fields) for fields in reader if fields]
    except csv.Error as err:
        raise SpacegraphValueError(f"{path}, line {reader.line_num}: not CSV ({err})") from err
    for where, fields in rows:
        if len(fields) != len(header):
            raise SpacegraphValueError(f"{where}: {len(fields)} fields where the header has {len(header)}")
    if not rows:
        raise SpacegraphValueError(f"{path} holds a header and no rows")
    return [(where, {name: field.strip() for name, field in zip(header, fields)}) for where, fields in rows]


def _field(where: str, row: dict[str, str], column: str) -> str:
    if not row[column]:
        raise SpacegraphValueError(f"{where}: {column} is empty")
    return row[column]


def _int(where: str, value: Any, column: str) -> int:
    try:
        number = int(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None:
        raise SpacegraphValueError(f"{where}: {column} {value!r} is not an integer")
    return number


def readable(name: str) -> str:
    """A class name as a prompt reads it: underscores as spaces ("chirping_birds" -> "chirping birds")."""
    return name.replace("_", " ").strip()


def _check_choice(option: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise SpacegraphValueError(f"{option} must be one of {', '.join(choices)}; got {value!r}")


# ---------------------------------------------------------------- classification: ESC-50, UrbanSound8K


@dataclass(frozen=True)
class _Labelled:
    where: str
    fold: int
    class_id: int
    class_name: str
    path: Path


def _class_names(entries: Sequence[_Labelled]) -> tuple[list[int], list[str]]:
    """The class ids in order and their readable names; one name per id, distinct."""
    names: dict[int, str] = {}
    for entry in entries:
        known = names.setdefault(entry.class_id, entry.class_name)
        if known != entry.class_name:
            raise SpacegraphValueError(
                f"{entry.where}: class id {entry.class_id} is {entry.class_name!r} here, {known!r} above"
            )
    ids = sorted(names)
    shown = [readable(names[i]) for i in ids]
    if len(set(shown)) != len(shown):
        raise SpacegraphValueError(f"{entries[0].where.rpartition(',')[0]}: two class ids share a name ({shown})")
    return ids, shown


def _classification(name: str, entries: list[_Labelled], fold: int | None) -> ClassificationSet:
    """The entries of ``fold`` (all when None), classes numbered by id over every fold; files checked."""
    ids, class_names = _class_names(entries)
    if fold is not None:
        folds = sorted({entry.fold for entry in entries})
        entries = [entry for entry in entries if entry.fold == fold]
        if not entries:
            raise SpacegraphValueError(f"{name}: no entry of fold {fold}; the folds are {folds}")
    for entry in entries:
        _file(entry.path, f"{entry.where}: audio file")
    labels = np.asarray([ids.index(entry.class_id) for entry in entries], dtype=np.int64)
    return ClassificationSet(name, "audio", [str(entry.path) for entry in entries], labels, class_names)


def _fold_option(fold: Any) -> int | None:
    if fold is None:
        return None
    return _int("option fold", fold, "fold")


ESC50_COLUMNS = ("filename", "fold", "target", "category")
ESC50_LAYOUT = "meta/esc50.csv (header filename,fold,target,category,esc10,src_file,take) and audio/<filename>"


def esc50(root: str | os.PathLike, fold: int | None = None) -> ClassificationSet:
    """ESC-50: ``meta/esc50.csv`` and ``audio/<filename>``; classes = categories ordered by target; ``fold``: only
    that fold (1-5)."""
    folder = _root(root, ESC50_LAYOUT)
    rows = csv_rows(folder / "meta" / "esc50.csv", ESC50_COLUMNS, ESC50_LAYOUT)
    entries = [
        _Labelled(
            where,
            _int(where, row["fold"], "fold"),
            _int(where, row["target"], "target"),
            _field(where, row, "category"),
            folder / "audio" / _field(where, row, "filename"),
        )
        for where, row in rows
    ]
    return _classification("esc50", entries, _fold_option(fold))


US8K_COLUMNS = ("slice_file_name", "fold", "classID", "class")
US8K_LAYOUT = (
    "metadata/UrbanSound8K.csv (header slice_file_name,fsID,start,end,salience,fold,classID,class) and "
    "audio/fold<N>/<slice_file_name>"
)


def urbansound8k(root: str | os.PathLike, fold: int | None = None) -> ClassificationSet:
    """UrbanSound8K: ``metadata/UrbanSound8K.csv`` and ``audio/fold<N>/<file>``; classes ordered by classID;
    ``fold``: only that fold (1-10)."""
    folder = _root(root, US8K_LAYOUT)
    rows = csv_rows(folder / "metadata" / "UrbanSound8K.csv", US8K_COLUMNS, US8K_LAYOUT)
    entries = []
    for where, row in rows:
        fold_here = _int(where, row["fold"], "fold")
        path = folder / "audio" / f"fold{fold_here}" / _field(where, row, "slice_file_name")
        entries.append(
            _Labelled(where, fold_here, _int(where, row["classID"], "classID"), _field(where, row, "class"), path)
        )
    return _classification("urbansound8k", entries, _fold_option(fold))


# ---------------------------------------------------------------- classification: ImageFolder, ModelNet40


def _class_folders(folder: Path, layout: str) -> list[Path]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SpacegraphValueError(f"{folder} holds no class folders; expected {layout}")
    return classes


def _files_by_class(
    name: str, modality: str, folders: Sequence[Path], suffixes: Sequence[str], names: Sequence[str]
) -> ClassificationSet:
    """Every file of ``suffixes`` under each class folder (hidden ones skipped), sorted by path."""
    items: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        found = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in suffixes
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            raise SpacegraphValueError(f"class folder {folder} holds no {modality} files ({', '.join(suffixes)})")
        items += [str(p) for p in found]
        labels += [label] * len(found)
    if len(set(names)) != len(names):
        raise SpacegraphValueError(f"{name}: two class folders share a name once underscores read as spaces: {names}")
    return ClassificationSet(name, modality, items, np.asarray(labels, dtype=np.int64), list(names))


IMAGEFOLDER_LAYOUT = "<root>/<class>/<images> (.jpg, .png, ...), one folder per class"


def imagefolder(root: str | os.PathLike) -> ClassificationSet:
    """ImageFolder: a folder per class (class names = folder names, underscores as spaces, sorted) of images."""
    folders = _class_folders(_root(root, IMAGEFOLDER_LAYOUT), IMAGEFOLDER_LAYOUT)
    return _files_by_class("imagefolder", "image", folders, IMAGE_SUFFIXES, [readable(p.name) for p in folders])


MODELNET_LAYOUT = f"<root>/<class>/{{train,test}}/<shape> ({', '.join(READERS)})"


def modelnet40(root: str | os.PathLike, split: str = "test") -> ClassificationSet:
    """ModelNet40: ``<class>/<split>/`` folders of point cloud files (.off meshes or .npy arrays; .ply and .pcd
    too), read when encoded by the point cloud space; ``split``: "train" or "test"."""
    _check_choice("split", split, ("train", "test"))
    folders = _class_folders(_root(root, MODELNET_LAYOUT), MODELNET_LAYOUT)
    splits = [folder / split for folder in folders]
    lacking = [str(p) for p in splits if not p.is_dir()]
    if lacking:
        raise SpacegraphFileNotFoundError(f"modelnet40: no {split} folder {lacking[0]}; expected {MODELNET_LAYOUT}")
    return _files_by_class("modelnet40", "point_cloud", splits, tuple(READERS), [readable(p.name) for p in folders])


# ---------------------------------------------------------------- retrieval: AudioCaps, Clotho


AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
AUDIOCAPS_LAYOUT = (
    "<split>.csv (header audiocap_id,youtube_id,start_time,caption) and <split>/ holding each clip as "
    "<audiocap_id>.wav or Y<youtube_id>.wav (.flac too)"
)


def _audiocaps_clips(rows: list[tuple[str, dict[str, str]]]) -> dict[tuple[str, int], list[tuple[str, str, str]]]:
    """Rows grouped by clip (youtube_id, start_time): each as (where, audiocap_id, caption)."""
    clips: dict[tuple[str, int], list[tuple[str, str, str]]] = {}
    for where, row in rows:
        start = _number(where, row["start_time"], "start_time")
        audiocap_id = str(_int(where, row["audiocap_id"], "audiocap_id"))
        clip = (_field(where, row, "youtube_id"), start)
        clips.setdefault(clip, []).append((where, audiocap_id, _field(where, row, "caption")))
    return clips


def _number(where: str, text: str, column: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SpacegraphValueError(f"{where}: {column} {text!r} is not a number of seconds")
    return round(value)


def audiocaps(root: str | os.PathLike, split: str = "test", missing: str = "error") -> RetrievalSet:
    """AudioCaps: ``<split>.csv`` and a ``<split>/`` audio folder; the captions of one clip (youtube_id,
    start_time) grouped. ``missing="skip"`` leaves out clips whose audio is absent (YouTube takes videos down)."""
    _check_choice("missing", missing, MISSING_CHOICES)
    folder = _root(root, AUDIOCAPS_LAYOUT)
    clips = _audiocaps_clips(csv_rows(folder / f"{split}.csv", AUDIOCAPS_COLUMNS, AUDIOCAPS_LAYOUT))
    items, captions = [], []
    for (youtube_id, _), rows in clips.items():
        path = _first_file(folder / split, [f"Y{youtube_id}", *(row[1] for row in rows)], AUDIO_SUFFIXES)
        if path is None and missing == "error":
            raise SpacegraphFileNotFoundError(
                f"{rows[0][0]}: no audio for clip {youtube_id} in {folder / split} (Y{youtube_id}.wav or "
                f"{rows[0][1]}.wav; .flac too); pass missing='skip' to leave such clips out"
            )
        if path is not None:
            items.append(str(path))
            captions.append([row[2] for row in rows])
    return _retrieval("audiocaps", "audio", items, captions, len(clips))


def _retrieval(name: str, modality: str, items: list[str], captions: list[list[str]], total: int) -> RetrievalSet:
    if not items:
        raise SpacegraphFileNotFoundError(f"{name}: none of the {total} entries has its {modality} file")
    return RetrievalSet(name, modality, items, captions, skipped=total - len(items))


CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
CLOTHO_LAYOUT = "clotho_captions_<split>.csv (header file_name,caption_1,...,caption_5) and <split>/<file_name>"


def clotho(root: str | os.PathLike, split: str = "evaluation") -> RetrievalSet:
    """Clotho: ``clotho_captions_<split>.csv`` (five captions per clip) and ``<split>/`` (development, validation,
    evaluation)."""
    folder = _root(root, CLOTHO_LAYOUT)
    rows = csv_rows(folder / f"clotho_captions_{split}.csv", ("file_name", *CLOTHO_CAPTIONS), CLOTHO_LAYOUT)
    items, captions, seen = [], [], set()
    for where, row in rows:
        name = _field(where, row, "file_name")
        if name in seen:
            raise SpacegraphValueError(f"{where}: {name} is listed twice")
        seen.add(name)
        items.append(str(_file(folder / split / name, f"{where}: audio file")))
        captions.append([_field(where, row, column) for column in CLOTHO_CAPTIONS])
    return RetrievalSet("clotho", "audio", items, captions)


# ---------------------------------------------------------------- retrieval: COCO, Flickr30k


COCO_LAYOUT = (
    "annotations/captions_<split>.json (COCO: images [{id, file_name}], annotations [{image_id, caption}]) and "
    "<split>/<file_name>"
)


def _json(path: Path, layout: str) -> Any:
    text = _text(path, layout)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpacegraphValueError(f"{path}: not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err


def _entries(path: Path, data: Any, key: str, fields: dict[str, type]) -> list[tuple[str, dict[str, Any]]]:
    """``data[key]``: a list of objects holding ``fields`` of those types, each as (where, entry)."""
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SpacegraphValueError(f"{path}: no list {key!r} at the top level; expected {COCO_LAYOUT}")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}, {key}[{i}]"
        for name, kind in fields.items():
            value = entry.get(name) if isinstance(entry, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
                raise SpacegraphValueError(f"{where}: {name} must be a non-empty {kind.__name__}, got {value!r}")
        out.append((where, entry))
    return out


def coco(root: str | os.PathLike, split: str = "val2017") -> RetrievalSet:
    """COCO captions: ``annotations/captions_<split>.json`` and ``<split>/`` images; images without captions are
    left out (counted in ``skipped``)."""
    folder = _root(root, COCO_LAYOUT)
    path = folder / "annotations" / f"captions_{split}.json"
    data = _json(path, COCO_LAYOUT)
    files: dict[int, tuple[str, str]] = {}
    for where, image in _entries(path, data, "images", {"id": int, "file_name": str}):
        if image["id"] in files:
            raise SpacegraphValueError(f"{where}: image id {image['id']} is listed twice")
        files[image["id"]] = (where, image["file_name"])
    captions: dict[int, list[str]] = {}
    for where, note in _entries(path, data, "annotations", {"image_id": int, "caption": str}):
        if note["image_id"] not in files:
            raise SpacegraphValueError(f"{where}: image_id {note['image_id']} is not among the images")
        captions.setdefault(note["image_id"], []).append(note["caption"].strip())
    items = [str(_file(folder / split / files[i][1], f"{files[i][0]}: image file")) for i in captions]
    return RetrievalSet("coco", "image", items, list(captions.values()), skipped=len(files) - len(items))


FLICKR_CAPTIONS = ("results.csv", "captions.csv", "captions.txt")
FLICKR_IMAGES = ("flickr30k_images", "images", "Images")
FLICKR_LAYOUT = (
    f"a captions file ({', '.join(FLICKR_CAPTIONS)}): Kaggle's 'image_name| comment_number| comment' or "
    f"'image,caption', and an images folder ({', '.join(FLICKR_IMAGES)})"
)


KAGGLE_HEADER = ["image_name", "comment_number", "comment"]
LOST_BAR = re.compile(r"(\d+)\s+(.+)")


def _bar_rows(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Kaggle's results.csv: ``image_name| comment_number| comment`` lines, quote characters as text (captions
    hold unbalanced ones). One row of the released file lacks its second bar (``2199200615.jpg| 4 A dog runs
    ...``): a number opening the second of two fields is read as the comment number."""
    lines = _text(path, FLICKR_LAYOUT).splitlines() or [""]
    if [name.strip() for name in lines[0].split("|")] != KAGGLE_HEADER:
        raise SpacegraphValueError(f"{path}: the header {lines[0]!r} is not 'image_name| comment_number| comment'")
    rows = []
    for number, line in ((n, line) for n, line in enumerate(lines[1:], start=2) if line.strip()):
        fields = [field.strip() for field in line.split("|", 2)]
        lost = LOST_BAR.fullmatch(fields[1]) if len(fields) == 2 else None
        fields = [fields[0], *lost.groups()] if lost else fields
        if len(fields) != 3:
            raise SpacegraphValueError(
                f"{path}, line {number}: {len(fields)} field(s), not 'image_name| comment_number| comment'"
            )
        rows.append((f"{path}, line {number}", dict(zip(KAGGLE_HEADER, fields))))
    if not rows:
        raise SpacegraphValueError(f"{path} holds a header and no rows")
    return rows


def _flickr_rows(path: Path) -> list[tuple[str, str, str]]:
    """(where, image file name, caption) of each row, in either of the two layouts."""
    first = _text(path, FLICKR_LAYOUT).partition("\n")[0]
    if "|" in first:
        rows, columns = _bar_rows(path), ("image_name", "comment")
    else:
        rows, columns = csv_rows(path, ("image", "caption"), FLICKR_LAYOUT), ("image", "caption")
    return [(where, _field(where, row, columns[0]), _field(where, row, columns[1])) for where, row in rows]


def _named(folder: Path, given: str | None, defaults: Sequence[str], check: Callable[[Path], bool]) -> Path:
    candidates = [given] if given is not None else list(defaults)
    found = next((folder / name for name in candidates if check(folder / name)), None)
    if found is None:
        raise SpacegraphFileNotFoundError(
            f"flickr30k: none of {', '.join(candidates)} in {folder}; expected {FLICKR_LAYOUT}"
        )
    return found


def flickr30k(root: str | os.PathLike, captions: str | None = None, images: str | None = None) -> RetrievalSet:
    """Flickr30k captions: a captions CSV (``captions``: its name in ``root``; default the first of
    results.csv, captions.csv, captions.txt) and an images folder (``images``; default flickr30k_images, images,
    Images); the captions of one image grouped, in file order."""
    folder = _root(root, FLICKR_LAYOUT)
    table = _named(folder, captions, FLICKR_CAPTIONS, Path.is_file)
    image_folder = _named(folder, images, FLICKR_IMAGES, Path.is_dir)
    grouped: dict[str, list[str]] = {}
    for where, name, caption in _flickr_rows(table):
        if name not in grouped:
            _file(image_folder / name, f"{where}: image file")
        grouped.setdefault(name, []).append(caption)
    return RetrievalSet("flickr30k", "image", [str(image_folder / n) for n in grouped], list(grouped.values()))


# ---------------------------------------------------------------- localization: VGGSS


VGGSS_LAYOUT = (
    '<annotations> (a JSON list of {"file": id, "class": name, "bbox": [[x0, y0, x1, y1], ...]}, boxes as '
    "fractions of the image or in pixels), frames/<file>.jpg (or .png) and audio/<file>.wav (or .flac)"
)


@dataclass(frozen=True)
class _VggssEntry:
    where: str
    file: str
    class_name: str
    boxes: list[list[float]]


def _vggss_entries(path: Path) -> list[_VggssEntry]:
    data = _json(path, VGGSS_LAYOUT)
    if not isinstance(data, list) or not data:
        raise SpacegraphValueError(f"{path}: expected a non-empty JSON list; {VGGSS_LAYOUT}")
    entries = []
    for i, entry in enumerate(data):
        where = f"{path}, entry {i}"
        fields = entry if isinstance(entry, dict) else {}
        file, name = fields.get("file"), fields.get("class")
        if not (isinstance(file, str) and file.strip() and isinstance(name, str) and name.strip()):
            raise SpacegraphValueError(f"{where}: 'file' and 'class' must be non-empty strings, got {entry!r}")
        entries.append(_VggssEntry(where, file.strip(), name.strip(), _raw_boxes(where, fields.get("bbox"))))
    return entries


def _raw_boxes(where: str, boxes: Any) -> list[list[float]]:
    ok = isinstance(boxes, list) and boxes and all(isinstance(box, list) and len(box) == 4 for box in boxes)
    numbers = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for box in boxes for v in box)
    if not numbers or not np.isfinite(boxes).all():
        raise SpacegraphValueError(
            f"{where}: 'bbox' must be a non-empty list of [x0, y0, x1, y1] numbers, got {boxes!r}"
        )
    return [[float(v) for v in box] for box in boxes]


def _pixel_boxes(entry: _VggssEntry, size: tuple[int, int], fractions: bool) -> list[list[float]]:
    """The entry's boxes in pixels of an image of ``size`` (width, height), clipped to it."""
    width, height = size
    scale = np.asarray([width, height, width, height], dtype=np.float64) if fractions else np.ones(4)
    out = []
    for box in entry.boxes:
        x0, y0, x1, y1 = np.minimum(np.asarray(box) * scale, [width, height, width, height]).tolist()
        if min(box) < 0 or x1 <= x0 or y1 <= y0:
            raise SpacegraphValueError(
                f"{entry.where}: box {box} is not x0 < x1, y0 < y1 inside the {width}x{height} image"
            )
        out.append([x0, y0, x1, y1])
    return out


def _image_size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        raise SpacegraphValueError(f"{where}: frame {path} is not an image Pillow reads ({err})") from err


def vggss(root: str | os.PathLike, annotations: str = "vggss.json", missing: str = "error") -> LocalizationSet:
    """VGG-Sound Source: the ``annotations`` JSON in ``root``, ``frames/`` and ``audio/``; boxes are fractions of
    the image (as the LVS release gives them) unless some coordinate in the file exceeds 1 (then pixels), and come
    out in pixels of each frame. ``missing="skip"`` leaves out entries whose frame or audio is absent."""
    _check_choice("missing", missing, MISSING_CHOICES)
    folder = _root(root, VGGSS_LAYOUT)
    entries = _vggss_entries(folder / annotations)
    fractions = max(v for entry in entries for box in entry.boxes for v in box) <= 1
    kept: list[tuple[_VggssEntry, Path, Path]] = []
    for entry in entries:
        frame = _first_file(folder / "frames", [entry.file], FRAME_SUFFIXES)
        audio = _first_file(folder / "audio", [entry.file], AUDIO_SUFFIXES)
        if (frame is None or audio is None) and missing == "error":
            lacking = "frame" if frame is None else "audio"
            raise SpacegraphFileNotFoundError(
                f"{entry.where}: no {lacking} for {entry.file!r} in {folder / ('frames' if frame is None else 'audio')}; "
                "pass missing='skip' to leave such entries out"
            )
        if frame is not None and audio is not None:
            kept.append((entry, frame, audio))
    if not kept:
        raise SpacegraphFileNotFoundError(f"vggss: none of the {len(entries)} entries has its frame and audio")
    class_names = sorted({entry.class_name for entry, _, _ in kept})
    return LocalizationSet(
        "vggss",
        "audio",
        [str(audio) for _, _, audio in kept],
        [str(frame) for _, frame, _ in kept],
        [_pixel_boxes(entry, _image_size(frame, entry.where), fractions) for entry, frame, _ in kept],
        np.asarray([class_names.index(entry.class_name) for entry, _, _ in kept], dtype=np.int64),
        [readable(name) for name in class_names],
        skipped=len(entries) - len(kept),
    )
