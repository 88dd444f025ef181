"""Encode throughput of the hf-clap space (5 s audio clips and texts per second) on random weights, here on CPU.

Two sizes: the tiny unfused model of ``tests/test_clap_space.py`` and the real ``laion/clap-htsat-unfused``
architecture (its config.json sets nothing but ``projection_dim`` 512 beyond the ``ClapConfig()`` defaults, which
are HTSAT-tiny + roberta-base), with LAION's preprocessor settings (48 kHz, 64 mels, hop 480, 10 s, 50-14000 Hz).
Random weights cost the same compute as trained ones, so nothing is downloaded. The tokenizer is a byte-level BPE
trained here on the texts (roberta-base's vocabulary is not available offline), so common words are one token each
as with roberta-base. Needs ``spacegraph[hf]``.

    python benchmarks/scripts/throughput_clap.py --json runs/throughput-clap.json
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from spacegraph_spaces import digits_data
from spacegraph_spaces.hf_clap import HFClapSpace
from throughput import measure, save

TINY = transformers.ClapConfig(
    audio_config={"spec_size": 64, "num_mel_bins": 64, "window_size": 4, "patch_size": 4, "patch_stride": (4, 4),
                  "depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16, "hidden_size": 32},
    text_config={"vocab_size": 1000, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "intermediate_size": 32, "max_position_embeddings": 66},
    projection_dim=16,
)  # fmt: skip
TINY_EXTRACTOR = {"feature_size": 64, "hop_length": 800, "max_length_s": 1, "frequency_min": 50}
LAION_EXTRACTOR = {"feature_size": 64, "hop_length": 480, "max_length_s": 10, "frequency_min": 50}
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4


def hf_clap(folder: Path, config: transformers.ClapConfig, extractor: dict, texts: list[str]) -> HFClapSpace:
    """A random-weight ``ClapModel`` saved with a 48 kHz extractor and a BPE tokenizer trained on ``texts``."""
    transformers.ClapModel(config).save_pretrained(str(folder))
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=config.text_config.vocab_size, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(folder))
    feature_extractor = transformers.ClapFeatureExtractor(sampling_rate=48_000, frequency_max=14_000, **extractor)
    tokenizer = transformers.RobertaTokenizer.from_pretrained(str(folder))
    transformers.ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(folder))
    return HFClapSpace(folder)


def clips(n: int, seconds: float, rate: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="runs/throughput-clap.json")
    parser.add_argument("--clips", type=int, default=16, help="5 s clips per audio measurement")
    parser.add_argument("--texts", type=int, default=128, help="WordNet digit texts, spread over all lengths")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts = sorted((row["text"] for row in digits_data.load_digit_texts()), key=len)
    texts = texts[:: max(len(texts) // args.texts, 1)][: args.texts]
    at_48k = clips(args.clips, 5.0, 48_000)
    at_44k = [(wave, 44_100) for wave in clips(args.clips, 5.0, 44_100)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("hf-clap tiny", hf_clap(Path(tmp, "tiny"), TINY, TINY_EXTRACTOR, texts)),
            ("hf-clap htsat-unfused (random)", hf_clap(Path(tmp, "htsat"), transformers.ClapConfig(), LAION_EXTRACTOR, texts)),
        ]  # fmt: skip
        for label, space in cases:
            rows.append(measure(space, "audio", at_48k, label=f"{label}, 5 s @ 48 kHz", batch_size=args.batch_size))
            rows.append(measure(space, "audio", at_44k, label=f"{label}, 5 s @ 44.1 kHz", batch_size=args.batch_size))
            rows.append(measure(space, "text", texts, label=label, batch_size=args.batch_size))
    save(rows, args.json)


if __name__ == "__main__":
    main()
