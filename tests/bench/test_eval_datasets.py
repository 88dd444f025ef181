"""The dataset adapters of ``spacegraph eval`` on tiny copies of each dataset's real layout, file formats and headers
(and, where the shared real data is present, over real MNIST digits, FSDD recordings and ModelNet10 points)."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spacegraph_bench import datasets
from spacegraph_spaces.pointcloud_io import read_point_cloud_file

import spacegraph as sg

DATA = Path(os.environ.get("SPACEGRAPH_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))
FSDD = DATA / "fsdd" / "recordings"
MNIST = DATA / "mnist5k" / "mnist5k.npz"
MODELNET10 = DATA / "modelnet10" / "modelnet10_1024.npz"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
US8K_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
ADAPTERS = ["audiocaps", "clotho", "coco", "esc50", "flickr30k", "imagefolder", "modelnet40", "urbansound8k", "vggss"]


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path}; set SPACEGRAPH_DATA")


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def touch(path: Path, data: bytes = b"RIFF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_image(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def refuses(match: str, name: str, root: Path, **options):
    with pytest.raises(sg.SpacegraphError, match=match):
        sg.load_dataset(name, root, **options)


# ---------------------------------------------------------------- registry


def test_list_datasets_finds_all_nine_adapters_by_entry_point():
    assert sg.list_datasets() == ADAPTERS
    assert sg.list_datasets("*8k") == ["urbansound8k"]


def test_load_dataset_refuses_unknown_names_and_options_naming_the_signature(tmp_path):
    with pytest.raises(sg.SpacegraphError, match="unknown dataset 'esc51'; registered: audiocaps, clotho"):
        sg.load_dataset("esc51", tmp_path)
    with pytest.raises(sg.SpacegraphTypeError, match=r"dataset 'esc50' cannot be built.*takes \(root.*fold"):
        sg.load_dataset("esc50", tmp_path, split="test")
    with pytest.raises(sg.SpacegraphFileNotFoundError, match="is not a folder; expected meta/esc50.csv"):
        sg.load_dataset("esc50", tmp_path / "absent")


# ---------------------------------------------------------------- ESC-50, UrbanSound8K


def esc50_layout(root: Path) -> Path:
    rows = [
        ["1-100032-A-0.wav", 1, 0, "dog", "True", 100032, "A"],
        ["1-100038-A-14.wav", 1, 14, "chirping_birds", "False", 100038, "A"],
        ["2-100648-A-0.wav", 2, 0, "dog", "True", 100648, "A"],
    ]
    for row in rows:
        touch(root / "audio" / row[0])
    write_csv(root / "meta" / "esc50.csv", ESC50_HEADER, rows)
    return root


def test_esc50_reads_classes_by_target_and_folds(tmp_path):
    root = esc50_layout(tmp_path)
    found = sg.load_dataset("esc50", root)
    assert found.class_names == ["dog", "chirping birds"] and found.modality == "audio"
    assert [Path(p).name for p in found.items] == ["1-100032-A-0.wav", "1-100038-A-14.wav", "2-100648-A-0.wav"]
    assert found.labels.tolist() == [0, 1, 0] and found.tasks == ("zeroshot",)
    fold2 = sg.load_dataset("esc50", root, fold=2)
    assert fold2.items == [str(root / "audio" / "2-100648-A-0.wav")] and fold2.class_names == found.class_names
    refuses(r"esc50: no entry of fold 6; the folds are \[1, 2\]", "esc50", root, fold=6)


def test_esc50_malformed_entries_name_the_file_and_line(tmp_path):
    root = esc50_layout(tmp_path)
    meta = root / "meta" / "esc50.csv"
    meta.write_text(meta.read_text() + "3-1.wav,3,x,dog,False,1,A\n")
    refuses(rf"{meta}, line 5: target 'x' is not an integer", "esc50", root)
    meta.write_text(meta.read_text().replace(",3,x,dog,", ",3,0,cat,"))
    refuses(rf"{meta}, line 5: class id 0 is 'cat' here, 'dog' above", "esc50", root)
    (root / "audio" / "1-100038-A-14.wav").unlink()
    write_csv(meta, ESC50_HEADER, [["1-100038-A-14.wav", 1, 14, "chirping_birds", "False", 1, "A"]])
    refuses(rf"{meta}, line 2: audio file .*1-100038-A-14.wav is missing", "esc50", root)
    write_csv(meta, ["filename", "fold", "category"], [["a.wav", 1, "dog"]])
    refuses(rf"{meta}: the header 'filename,fold,category' lacks target", "esc50", root)


def test_urbansound8k_reads_fold_folders(tmp_path):
    rows = [
        ["100032-3-0-0.wav", 100032, 0.0, 0.317551, 1, 5, 3, "dog_bark"],
        ["100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 5, 2, "children_playing"],
        ["101415-3-0-2.wav", 101415, 1.0, 5.0, 1, 1, 3, "dog_bark"],
    ]
    for row in rows:
        touch(tmp_path / "audio" / f"fold{row[5]}" / row[0])
    meta = write_csv(tmp_path / "metadata" / "UrbanSound8K.csv", US8K_HEADER, rows)
    found = sg.load_dataset("urbansound8k", tmp_path)
    assert found.class_names == ["children playing", "dog bark"] and found.labels.tolist() == [1, 0, 1]
    assert found.items[2] == str(tmp_path / "audio" / "fold1" / "101415-3-0-2.wav")
    assert sg.load_dataset("urbansound8k", tmp_path, fold=1).labels.tolist() == [1]
    shutil.move(tmp_path / "audio" / "fold1", tmp_path / "audio" / "fold2")
    refuses(rf"{meta}, line 4: audio file .*fold1/101415-3-0-2.wav is missing", "urbansound8k", tmp_path)
    meta.write_text(meta.read_text() + "x.wav,1,0,1,1,1\n")
    refuses(rf"{meta}, line 5: 6 fields where the header has 8", "urbansound8k", tmp_path)


@needs(FSDD)
def test_esc50_layout_over_real_fsdd_recordings(tmp_path):
    """An ESC-50 layout of real spoken digits: FSDD names are digit_speaker_take.wav; the take is the fold here."""
    rows = []
    for digit in range(10):
        for take in (0, 1):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(FSDD / name, touch(tmp_path / "audio" / name))
            rows.append([name, take + 1, digit, WORDS[digit], "False", f"{digit}_jackson", "A"])
    write_csv(tmp_path / "meta" / "esc50.csv", ESC50_HEADER, rows)
    found = sg.load_dataset("esc50", tmp_path, fold=2)
    assert found.class_names == WORDS and found.labels.tolist() == list(range(10))
    assert [Path(p).name for p in found.items] == [f"{d}_jackson_1.wav" for d in range(10)]
    assert all(Path(p).read_bytes()[:4] == b"RIFF" for p in found.items)


# ---------------------------------------------------------------- ImageFolder, ModelNet40


def test_imagefolder_reads_class_folders_of_images(tmp_path):
    write_image(tmp_path / "golden_retriever" / "b.png")
    write_image(tmp_path / "golden_retriever" / "a.jpg")
    write_image(tmp_path / "cat" / "nested" / "c.jpeg")
    touch(tmp_path / "cat" / "notes.txt", b"not an image")
    write_image(tmp_path / "cat" / ".hidden" / "d.png")
    found = sg.load_dataset("imagefolder", tmp_path)
    assert found.class_names == ["cat", "golden retriever"] and found.modality == "image"
    assert [Path(p).name for p in found.items] == ["c.jpeg", "a.jpg", "b.png"] and found.labels.tolist() == [0, 1, 1]
    (tmp_path / "dog").mkdir()
    refuses(rf"class folder {tmp_path / 'dog'} holds no image files", "imagefolder", tmp_path)
    (tmp_path / "dog").rmdir()
    write_image(tmp_path / "golden retriever" / "e.png")
    refuses("two class folders share a name once underscores read as spaces", "imagefolder", tmp_path)


@needs(MNIST)
def test_imagefolder_over_real_mnist_digits(tmp_path):
    mnist = np.load(MNIST)
    images, labels = mnist["images"], mnist["label"]
    for digit in range(10):
        for i in np.flatnonzero(labels == digit)[:3]:
            Image.fromarray(images[i]).save(write_image(tmp_path / WORDS[digit] / f"{i:04d}.png"))
    found = sg.load_dataset("imagefolder", tmp_path)
    assert found.class_names == sorted(WORDS) and len(found.items) == 30
    for path, label in zip(found.items, found.labels):
        assert Path(path).parent.name == found.class_names[label]
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (28, 28) and np.array_equal(pixels, images[int(Path(path).stem)])


def test_modelnet40_reads_split_folders_of_off_and_npy(tmp_path):
    off = "OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n"
    touch(tmp_path / "airplane" / "test" / "airplane_0627.off").write_text(off)
    np.save(touch(tmp_path / "night_stand" / "test" / "night_stand_0201.npy"), np.zeros((5, 3), np.float32))
    touch(tmp_path / "airplane" / "train" / "airplane_0001.off").write_text(off)
    touch(tmp_path / "night_stand" / "train" / "night_stand_0001.npy")
    found = sg.load_dataset("modelnet40", tmp_path)
    assert found.class_names == ["airplane", "night stand"] and found.modality == "point_cloud"
    assert found.labels.tolist() == [0, 1]
    assert read_point_cloud_file(found.items[0]).shape == (4, 3)
    assert read_point_cloud_file(found.items[1]).shape == (5, 3)
    assert sg.load_dataset("modelnet40", tmp_path, split="train").items[0].endswith("train/airplane_0001.off")
    refuses("split must be one of train, test; got 'val'", "modelnet40", tmp_path, split="val")
    shutil.rmtree(tmp_path / "airplane" / "test")
    refuses(rf"modelnet40: no test folder {tmp_path / 'airplane' / 'test'}", "modelnet40", tmp_path)
    (tmp_path / "airplane" / "test").mkdir()
    refuses(rf"class folder {tmp_path / 'airplane' / 'test'} holds no point_cloud files", "modelnet40", tmp_path)


@needs(MODELNET10)
def test_modelnet40_layout_over_real_modelnet10_points(tmp_path):
    with np.load(MODELNET10) as shapes:  # each key read once: an npz reads an array on every access
        points, labels, classes, split, names = (shapes[key] for key in ("points", "label", "classes", "split", "name"))
    chosen = [i for label in range(len(classes)) for i in np.flatnonzero((labels == label) & (split == "test"))[:2]]
    for i in chosen:
        np.save(touch(tmp_path / classes[labels[i]] / "test" / f"{names[i]}.npy"), points[i])
    found = sg.load_dataset("modelnet40", tmp_path)
    assert found.class_names == [name.replace("_", " ") for name in classes]
    assert found.labels.tolist() == [label for label in range(10) for _ in range(2)]
    for path, i in zip(found.items, chosen):
        assert np.array_equal(read_point_cloud_file(path), points[i])


# ---------------------------------------------------------------- AudioCaps, Clotho


def test_audiocaps_groups_the_captions_of_a_clip(tmp_path):
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    rows = [
        [103549, "--0w1YA1Hm4", 30, "A vehicle driving as a man and woman are talking and laughing"],
        [103548, "--0w1YA1Hm4", 30, "A man and woman talk while a car passes"],
        [97151, "-AheI8Epim4", 30, '"Whistling", then a dog barks'],
        [107898, "-BUWGM7qeFM", 30, "Water flows"],
    ]
    table = write_csv(tmp_path / "test.csv", header, rows)
    touch(tmp_path / "test" / "Y--0w1YA1Hm4.wav")
    touch(tmp_path / "test" / "97151.flac")
    refuses(rf"{table}, line 5: no audio for clip -BUWGM7qeFM .*missing='skip'", "audiocaps", tmp_path)
    found = sg.load_dataset("audiocaps", tmp_path, missing="skip")
    assert [Path(p).name for p in found.items] == ["Y--0w1YA1Hm4.wav", "97151.flac"] and found.skipped == 1
    assert found.captions[0][1] == "A man and woman talk while a car passes" and len(found.captions[0]) == 2
    assert found.captions[1] == ['"Whistling", then a dog barks']
    texts, owners = found.texts()
    assert len(texts) == 3 and owners.tolist() == [0, 0, 1]
    refuses("missing must be one of error, skip; got 'ignore'", "audiocaps", tmp_path, missing="ignore")
    table.write_text(table.read_text() + "5,-x,later,Rain\n")
    refuses(rf"{table}, line 6: start_time 'later' is not a number of seconds", "audiocaps", tmp_path)


def clotho_layout(root: Path) -> Path:
    header = ["file_name", *datasets.CLOTHO_CAPTIONS]
    rows = [
        ["Santa Motor.wav", "A machine whines and squeals", "A motor hums", "An engine idles", "Gears grind", "Whir"],
        ["07 ambient bell church.wav", "Bells ring, slowly", "A church bell", "Chimes", "A bell tolls", "Ding, dong"],
    ]
    for row in rows:
        touch(root / "evaluation" / row[0])
    return write_csv(root / "clotho_captions_evaluation.csv", header, rows)


def test_clotho_reads_five_captions_per_clip(tmp_path):
    table = clotho_layout(tmp_path)
    found = sg.load_dataset("clotho", tmp_path)
    assert found.items == [
        str(tmp_path / "evaluation" / "Santa Motor.wav"),
        str(tmp_path / "evaluation" / "07 ambient bell church.wav"),
    ]
    assert found.captions[1] == ["Bells ring, slowly", "A church bell", "Chimes", "A bell tolls", "Ding, dong"]
    assert found.tasks == ("retrieval",) and found.texts()[1].tolist() == [0] * 5 + [1] * 5
    table.write_text(table.read_text() + "Santa Motor.wav,a,b,c,d,e\n")
    refuses(rf"{table}, line 4: Santa Motor.wav is listed twice", "clotho", tmp_path)
    table.write_text(table.read_text().replace("Santa Motor.wav,a,b,c,d,e", "other.wav,a,b,,d,e"))
    refuses(rf"{table}, line 4: audio file .*evaluation/other.wav is missing", "clotho", tmp_path)
    touch(tmp_path / "evaluation" / "other.wav")
    refuses(rf"{table}, line 4: caption_3 is empty", "clotho", tmp_path)
    refuses(r"clotho_captions_development.csv is missing", "clotho", tmp_path, split="development")


@needs(FSDD)
def test_clotho_layout_over_real_fsdd_recordings(tmp_path):
    header, rows = ["file_name", *datasets.CLOTHO_CAPTIONS], []
    for digit in range(10):
        name = f"{digit}_theo_0.wav"
        shutil.copy(FSDD / name, touch(tmp_path / "evaluation" / name))
        rows.append([name, *(f"{word} {WORDS[digit]}" for word in ("say", "the digit", "spoken", "a", "number"))])
    write_csv(tmp_path / "clotho_captions_evaluation.csv", header, rows)
    found = sg.load_dataset("clotho", tmp_path)
    assert [Path(p).name for p in found.items] == [f"{d}_theo_0.wav" for d in range(10)]
    assert found.captions[7][1] == "the digit seven" and len(found.texts()[0]) == 50


# ---------------------------------------------------------------- COCO, Flickr30k


def coco_layout(root: Path) -> Path:
    annotations = {
        "info": {"description": "COCO 2017 Dataset"},
        "images": [
            {"id": 397133, "file_name": "000000397133.jpg", "height": 427, "width": 640},
            {"id": 37777, "file_name": "000000037777.jpg", "height": 230, "width": 352},
            {"id": 252219, "file_name": "000000252219.jpg", "height": 428, "width": 640},
        ],
        "annotations": [
            {"image_id": 37777, "id": 1, "caption": "The dining table near the kitchen has a bowl of fruit on it."},
            {"image_id": 397133, "id": 2, "caption": "A man is in a kitchen making pizzas. "},
            {"image_id": 37777, "id": 3, "caption": "A small kitchen has various appliances and a table."},
        ],
    }
    for image in annotations["images"][:2]:
        write_image(root / "val2017" / image["file_name"])
    path = root / "annotations" / "captions_val2017.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(annotations))
    return path


def test_coco_groups_captions_by_image(tmp_path):
    path = coco_layout(tmp_path)
    found = sg.load_dataset("coco", tmp_path)
    assert [Path(p).name for p in found.items] == ["000000037777.jpg", "000000397133.jpg"]
    assert found.captions[1] == ["A man is in a kitchen making pizzas."] and len(found.captions[0]) == 2
    assert found.skipped == 1 and found.modality == "image"
    data = json.loads(path.read_text())
    data["annotations"].append({"image_id": 5, "caption": "A cat."})
    path.write_text(json.dumps(data))
    refuses(rf"{path}, annotations\[3\]: image_id 5 is not among the images", "coco", tmp_path)
    data["annotations"][3] = {"image_id": 37777, "caption": 7}
    path.write_text(json.dumps(data))
    refuses(rf"{path}, annotations\[3\]: caption must be a non-empty str, got 7", "coco", tmp_path)
    path.write_text('{"images": [')
    refuses(rf"{path}: not JSON", "coco", tmp_path)


def test_flickr30k_reads_the_kaggle_results_csv(tmp_path):
    """The Kaggle results.csv: '|'-separated with a space after each bar, unbalanced quotes in the comments."""
    lines = [
        "image_name| comment_number| comment",
        "1000092795.jpg| 0| Two young guys with shaggy hair look at their hands while hanging out in the yard .",
        '1000092795.jpg| 1| Two young , White males are outside near many bushes " .',
        "10002456.jpg| 0| Several men in hard hats are operating a giant pulley system .",
    ]
    table = tmp_path / "results.csv"
    table.write_text("\n".join(lines) + "\n")
    for name in ("1000092795.jpg", "10002456.jpg"):
        write_image(tmp_path / "flickr30k_images" / name)
    found = sg.load_dataset("flickr30k", tmp_path)
    assert [Path(p).name for p in found.items] == ["1000092795.jpg", "10002456.jpg"]
    assert found.captions[0][1] == 'Two young , White males are outside near many bushes " .'
    assert len(found.captions[0]) == 2 and found.captions[1] == [lines[3].split("| ")[2]]
    # The released file's line 19,999 lacks its second bar: the comment number is read off the comment.
    write_image(tmp_path / "flickr30k_images" / "2199200615.jpg")
    table.write_text(table.read_text() + "2199200615.jpg| 4 A dog runs across the grass .\n")
    assert sg.load_dataset("flickr30k", tmp_path).captions[2] == ["A dog runs across the grass ."]
    table.write_text(table.read_text() + "\n2199200615.jpg A dog .\n")
    refuses(rf"{table}, line 7: 1 field\(s\), not 'image_name\| comment_number\| comment'", "flickr30k", tmp_path)
    table.write_text(table.read_text().replace("comment_number", "number"))
    refuses(rf"{table}: the header .* is not 'image_name\| comment_number", "flickr30k", tmp_path)


def test_flickr30k_reads_an_image_caption_csv_and_named_files(tmp_path):
    table = write_csv(
        tmp_path / "captions.txt",
        ["image", "caption"],
        [["1000092795.jpg", "Two young guys, with shaggy hair."], ["1001.jpg", "A dog ."]],
    )
    write_image(tmp_path / "Images" / "1000092795.jpg")
    refuses(rf"{table}, line 3: image file .*1001.jpg is missing", "flickr30k", tmp_path)
    write_image(tmp_path / "Images" / "1001.jpg")
    found = sg.load_dataset("flickr30k", tmp_path)
    assert found.captions == [["Two young guys, with shaggy hair."], ["A dog ."]]
    refuses("flickr30k: none of pics in", "flickr30k", tmp_path, images="pics")


# ---------------------------------------------------------------- VGGSS


def vggss_layout(root: Path, boxes: list) -> Path:
    entries = [
        {"file": "--1l6WGE7AU_000030", "class": "playing_violin", "bbox": boxes[0]},
        {"file": "-0jeONf82dE_000021", "class": "dog_barking", "bbox": boxes[1]},
    ]
    for entry in entries:
        write_image(root / "frames" / f"{entry['file']}.jpg", (200, 100))
        touch(root / "audio" / f"{entry['file']}.wav")
    path = root / "vggss.json"
    path.write_text(json.dumps(entries))
    return path


def test_vggss_boxes_as_fractions_come_out_in_pixels(tmp_path):
    vggss_layout(tmp_path, [[[0.1, 0.2, 0.5, 1.0]], [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    found = sg.load_dataset("vggss", tmp_path)
    assert found.boxes == [[[20.0, 20.0, 100.0, 100.0]], [[0.0, 0.0, 100.0, 50.0], [100.0, 50.0, 200.0, 100.0]]]
    assert found.class_names == ["dog barking", "playing violin"] and found.labels.tolist() == [1, 0]
    assert [Path(p).name for p in found.queries] == ["--1l6WGE7AU_000030.wav", "-0jeONf82dE_000021.wav"]
    assert Path(found.images[1]).name == "-0jeONf82dE_000021.jpg" and found.query_modality == "audio"
    queries, images, matched = found.counterfactual_pairs()
    assert queries.tolist() == [0, 1, 0, 1] and images.tolist() == [0, 1, 1, 0]
    assert matched.tolist() == [True, True, False, False]


def test_vggss_pixel_boxes_missing_files_and_malformed_entries(tmp_path):
    path = vggss_layout(tmp_path, [[[10, 20, 150, 90]], [[0, 0, 300, 100]]])
    assert sg.load_dataset("vggss", tmp_path).boxes == [[[10.0, 20.0, 150.0, 90.0]], [[0.0, 0.0, 200.0, 100.0]]]
    (tmp_path / "audio" / "-0jeONf82dE_000021.wav").unlink()
    refuses(rf"{path}, entry 1: no audio for '-0jeONf82dE_000021'", "vggss", tmp_path)
    kept = sg.load_dataset("vggss", tmp_path, missing="skip")
    assert kept.skipped == 1 and len(kept.images) == 1
    entries = json.loads(path.read_text())
    entries[0]["bbox"] = [[0.5, 0.1, 0.2]]
    path.write_text(json.dumps(entries))
    refuses(rf"{path}, entry 0: 'bbox' must be a non-empty list of \[x0, y0, x1, y1\]", "vggss", tmp_path)
    entries[0]["bbox"] = [[0.5, 0.1, 0.2, 0.9]]
    path.write_text(json.dumps(entries))
    refuses(rf"{path}, entry 0: box \[0.5, 0.1, 0.2, 0.9\] is not x0 < x1", "vggss", tmp_path, missing="skip")
    entries[0] = {"file": "", "class": "x", "bbox": [[0, 0, 1, 1]]}
    path.write_text(json.dumps(entries))
    refuses(rf"{path}, entry 0: 'file' and 'class' must be non-empty strings", "vggss", tmp_path)
