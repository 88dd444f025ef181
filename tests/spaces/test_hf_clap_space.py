"""The hf-clap space on tiny random CLAP checkpoints (unfused and fused) built and saved here: offline, a few seconds."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
import soundfile as sf
import spacegraph_spaces
import torch
from spacegraph_spaces import hf_clap
from spacegraph_spaces.hf_clap import FUSION_SEED, HFClapSpace
from spacegraph_spaces.media import load_audio

import spacegraph as sg
from spacegraph import Modality, fingerprint_state_dict

transformers = pytest.importorskip("transformers")
torch.set_num_threads(2)
RATE = 48_000  # the tiny extractor's sampling_rate, as LAION's; max_length_s = 1, so 2 s clips are "longer"


def _byte_level_chars() -> list[str]:
    """The 256 characters GPT-2/RoBERTa byte-level BPE maps bytes to."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]


def _write_tokenizer(folder) -> transformers.RobertaTokenizer:
    """A RoBERTa tokenizer over single bytes (no merges): every text tokenises, one token per byte."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *_byte_level_chars(), "<mask>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return transformers.RobertaTokenizer.from_pretrained(str(folder))


def build_tiny_clap(folder, *, fused: bool) -> None:
    """Save a tiny random ClapModel + ClapProcessor. The extractor's default truncation is deliberately the WRONG
    one for the checkpoint, so the tests prove the space picks the mode from ``enable_fusion``, not from it."""
    torch.manual_seed(0)
    audio = {
        "spec_size": 64,
        "num_mel_bins": 64,
        "window_size": 4,
        "patch_size": 4,
        "patch_stride": (4, 4),
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "patch_embeds_hidden_size": 16,
        "hidden_size": 32,
        "enable_fusion": fused,
        "fusion_type": "aff_2d" if fused else None,
    }
    text = {
        "vocab_size": 300,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 66,
    }
    config = transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=16)
    transformers.ClapModel(config).save_pretrained(str(folder))
    # 64 mel bins: ClapFeatureExtractor's fusion hard-codes 64; hop 800 gives 61 frames per second (<= spec_size).
    extractor = transformers.ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=RATE,
        hop_length=800,
        max_length_s=1,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14_000,
        truncation="rand_trunc" if fused else "fusion",
    )
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=_write_tokenizer(folder)).save_pretrained(
        str(folder)
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, object]:
    out = {}
    for kind in ("unfused", "fused"):
        out[kind] = tmp_path_factory.mktemp(kind)
        build_tiny_clap(out[kind], fused=kind == "fused")
    return out


@pytest.fixture(scope="module")
def spaces(folders) -> dict[str, HFClapSpace]:
    return {kind: HFClapSpace(folder) for kind, folder in folders.items()}


@pytest.fixture(params=["unfused", "fused"])
def space(request, spaces) -> HFClapSpace:
    return spaces[request.param]


def tone(seconds: float, rate: int = RATE, channels: int = 0) -> np.ndarray:
    """A smooth test signal (300 / 1100 / 2500 Hz); ``channels`` > 0 gives [samples, channels] scaled copies."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 1100 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)
    wave = (wave * (1 + 0.5 * np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1) if channels else wave


def by_hand(space: HFClapSpace, wave: np.ndarray, truncation: str, is_longer: bool) -> torch.Tensor:
    """What calling the transformers model directly gives (crops drawn under FUSION_SEED, honest is_longer)."""
    np.random.seed(FUSION_SEED)
    features = space.processor.feature_extractor(wave, sampling_rate=RATE, truncation=truncation, return_tensors="pt")
    with torch.inference_mode():
        out = space.model.get_audio_features(
            input_features=features["input_features"], is_longer=torch.tensor([[is_longer]])
        )
    return torch.nn.functional.normalize(hf_clap._pooled(out), dim=-1)


def test_spec_and_fingerprint(spaces, folders):
    unfused, fused = spaces["unfused"], spaces["fused"]
    assert unfused.spec.name == f"clap:{folders['unfused']}"
    assert unfused.modalities == (Modality.AUDIO, Modality.TEXT) and unfused.spec.dim == 16 and unfused.spec.normalized
    assert (unfused.fused, fused.fused) == (False, True)
    assert unfused.spec.fingerprint == fingerprint_state_dict(unfused.model.state_dict(), unfused.preprocessing())
    assert unfused.spec.fingerprint.startswith("sha256:") and unfused.spec.fingerprint != fused.spec.fingerprint
    again = HFClapSpace(folders["unfused"], name="my-clap")
    assert again.spec.name == "my-clap" and again.spec.fingerprint == unfused.spec.fingerprint


def test_registry_lists_and_loads_hf_clap(folders, spaces):
    assert "hf-clap" in sg.list_spaces()
    loaded = sg.load_space("hf-clap", model_name_or_path=str(folders["fused"]))
    assert isinstance(loaded, HFClapSpace) and loaded.spec.fingerprint == spaces["fused"].spec.fingerprint


def test_unfused_audio_equals_model_by_hand(spaces):
    space = spaces["unfused"]
    short, long = tone(0.6), tone(2.5)
    out = space.encode("audio", [short, long])
    torch.testing.assert_close(out[0], by_hand(space, short, "rand_trunc", False)[0], atol=1e-5, rtol=0)
    centre = long[int(0.75 * RATE) : int(1.75 * RATE)]  # 1 s centre crop of 2.5 s
    torch.testing.assert_close(out[1], by_hand(space, centre, "rand_trunc", True)[0], atol=1e-5, rtol=0)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))


def test_fused_audio_equals_model_by_hand(spaces):
    space = spaces["fused"]
    short, long = tone(0.6), tone(2.5)
    out = space.encode("audio", [short, long])
    torch.testing.assert_close(out[0], by_hand(space, short, "fusion", False)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], by_hand(space, long, "fusion", True)[0], atol=1e-5, rtol=0)


def test_fusion_mode_follows_the_checkpoint(spaces, monkeypatch):
    seen = {}
    for kind, space in spaces.items():
        original = space.model.get_audio_features

        def spy(*, input_features, is_longer, _kind=kind, _original=original):
            seen[_kind] = (tuple(input_features.shape), is_longer.flatten().tolist())
            return _original(input_features=input_features, is_longer=is_longer)

        monkeypatch.setattr(space.model, "get_audio_features", spy)
        space.encode("audio", [tone(0.5), tone(3.0), tone(1.01)])
    assert seen["unfused"][0][:2] == (3, 1)  # one mel per clip, never the 4 fused ones, even for the 3 s clip
    assert seen["fused"][0][:2] == (3, 4)
    assert seen["fused"][1] == [False, True, False]  # only a clip fusion really cropped is "longer"


def test_deterministic_and_batch_independent(space):
    clips = [tone(2.5), tone(0.4), tone(1.7, channels=2)]
    state = np.random.get_state()[1].copy()
    first = space.encode("audio", clips)
    assert np.array_equal(np.random.get_state()[1], state)  # the caller's numpy RNG is left as it was
    torch.testing.assert_close(space.encode("audio", clips), first, atol=0, rtol=0)
    for i, clip in enumerate(clips):
        torch.testing.assert_close(space.encode("audio", [clip])[0], first[i], atol=1e-5, rtol=0)
    reordered = space.encode("audio", [tone(0.9), clips[2], clips[0]], batch_size=2)
    torch.testing.assert_close(reordered[1:], first[[2, 0]], atol=1e-5, rtol=0)


def test_other_rates_and_channels_land_close(space):
    mono48 = tone(0.8)
    stereo16 = tone(0.8, rate=16_000, channels=2)
    as_mono48 = mono48 * 0.85  # the mean of the two channels (1.0 and 0.7 scaled)
    fed = load_audio((stereo16, 16_000), RATE)
    assert fed.shape == mono48.shape
    inner = slice(500, -500)  # away from the resampler's edges
    assert np.abs(fed[inner] - as_mono48[inner]).max() < 1e-2
    out = space.encode("audio", [as_mono48, (stereo16, 16_000), (stereo16.T.copy(), 16_000)])
    assert float(out[0] @ out[1]) > 0.99 and float(out[1] @ out[2]) > 0.9999


def test_file_and_array_kinds_agree(space, tmp_path):
    wave = tone(1.3)
    pcm = np.round(wave * 32767).astype(np.int16)
    sf.write(tmp_path / "clip.wav", pcm, RATE, subtype="PCM_16")
    sf.write(tmp_path / "clip.flac", np.stack([pcm, pcm], axis=1), RATE)
    sf.write(tmp_path / "clip44k.wav", tone(1.3, rate=44_100), 44_100, subtype="FLOAT")
    floats = pcm.astype(np.float32) / 32768
    same = [tmp_path / "clip.wav", str(tmp_path / "clip.flac"), pcm, torch.from_numpy(floats), (floats, RATE)]
    items = [floats, *same, tmp_path / "clip44k.wav"]
    out = space.encode("audio", items)
    for row in out[1:6]:
        torch.testing.assert_close(row, out[0], atol=1e-5, rtol=0)
    assert float(out[6] @ out[0]) > 0.99


def test_mp3_file(space, tmp_path):
    """This soundfile build (libsndfile >= 1.1) reads MP3; lossy, so only close."""
    path = tmp_path / "clip.mp3"
    try:
        sf.write(path, tone(1.3), RATE, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as err:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write MP3 ({err})")
    out = space.encode("audio", [path, tone(1.3)])
    assert float(out[0] @ out[1]) > 0.99


def test_text_equals_model_by_hand_and_is_batch_independent(space):
    texts = ["a dog barks", "rain on a tin roof, then thunder far away", "x" * 500]
    out = space.encode("text", texts)
    tokens = space.processor.tokenizer(texts[:1], return_tensors="pt")
    with torch.inference_mode():
        expected = hf_clap._pooled(space.model.get_text_features(**tokens))
    torch.testing.assert_close(out[0], torch.nn.functional.normalize(expected, dim=-1)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(space.encode("text", texts[:1])[0], out[0], atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()  # the 500-char text is truncated to the 64 positions the tower has


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


AUDIO_BAD = [
    (lambda d: d / "missing.wav", FileNotFoundError, r"audio file not found: .*missing\.wav"),
    (
        lambda d: _write(d / "bad.wav", b"RIFF nope"),
        ValueError,
        r"could not read audio file .*bad\.wav.*accepted audio",
    ),
    (lambda d: _write(d / "notes.txt", b"hello"), ValueError, r"could not read audio file .*notes\.txt.*MP3"),
    (lambda d: np.zeros(0, np.float32), ValueError, r"zero-length audio"),
    (lambda d: sf.write(d / "empty.wav", np.zeros(0, np.float32), RATE) or d / "empty.wav", ValueError, "zero-length"),
    (lambda d: np.array([0.1, np.nan], np.float32), ValueError, r"NaN or inf"),
    (lambda d: (np.array([0.1, np.inf]), 16_000), ValueError, r"tuple: audio contains NaN or inf"),
    (lambda d: (np.zeros(100, np.float32), 0), ValueError, r"sample_rate must be a positive int, got 0"),
    (lambda d: ([0.1, 0.2], 16_000), TypeError, r"array of type list is not supported.*accepted audio"),
    (lambda d: np.zeros((2, 3, 100), np.float32), ValueError, r"not 1-D"),
    (lambda d: np.array(["a", "b"]), TypeError, r"must be numeric"),
    (lambda d: 5, TypeError, r"int is not supported.*\(array, sample_rate\) tuples"),
]


@pytest.mark.parametrize(("make", "error", "message"), AUDIO_BAD)
def test_bad_audio(spaces, tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        spaces["unfused"].encode("audio", [tone(0.1), make(tmp_path)])


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        ("", ValueError, "empty or whitespace"),
        (" \n", ValueError, "empty or whitespace"),
        (7, TypeError, "must be str"),
    ],
)
def test_bad_text(spaces, item, error, message):
    with pytest.raises(error, match=message):
        spaces["fused"].encode("text", ["a dog", item])


def test_transformers_is_imported_lazily_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "spacegraph_spaces.hf_clap")
    monkeypatch.setattr(spacegraph_spaces, "hf_clap", hf_clap)  # restored after the fresh import below
    fresh = importlib.import_module("spacegraph_spaces.hf_clap")  # fails if it imports transformers eagerly
    with pytest.raises(ImportError, match=r'pip install "spacegraph\[hf\]"'):
        fresh.HFClapSpace("laion/clap-htsat-unfused")
