"""Encode throughput of the CLIP plugins (images and texts per second) on random weights, here on CPU.

Two sizes per backend: the tiny models of ``tests/test_clip_spaces.py`` and the real ViT-B/32 architecture
(open_clip ``ViT-B-32`` with ``pretrained=None``; transformers ``CLIPConfig()``, whose defaults are ViT-B/32).
Random weights cost the same compute as trained ones, so no download is needed. Both HF models use OpenAI's
49,408-token BPE vocabulary, read from the copy that open_clip ships. Needs ``spacegraph[clip,hf]``.

    python benchmarks/scripts/throughput_clip.py --json runs/throughput-clip.json
"""

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from spacegraph_spaces import digits_data
from spacegraph_spaces.hf_clip import HFCLIPSpace
from spacegraph_spaces.openclip import OpenCLIPSpace
from throughput import measure, save

from spacegraph import Space

TINY_OPENCLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_HF = transformers.CLIPConfig(
    text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "max_position_embeddings": 16},
    vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "image_size": 32, "patch_size": 8},
    projection_dim=24,
)  # fmt: skip
# open_clip renamed OpenAI's special tokens; transformers keeps the original names.
HF_SPECIAL_TOKENS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def tiny_openclip(folder: Path) -> OpenCLIPSpace:
    model = open_clip.CLIP(**copy.deepcopy(TINY_OPENCLIP))
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPENCLIP}))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return OpenCLIPSpace(f"local-dir:{folder}")


def hf_clip(folder: Path, config: transformers.CLIPConfig) -> HFCLIPSpace:
    """A random-weight ``CLIPModel`` with OpenAI's BPE tokenizer and an image processor at its input size."""
    transformers.CLIPModel(config).save_pretrained(str(folder))
    bpe = open_clip.tokenizer.SimpleTokenizer()
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    vocab = {HF_SPECIAL_TOKENS.get(token, token): i for token, i in bpe.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    size = config.vision_config.image_size
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder))
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return HFCLIPSpace(str(folder))


def inputs(n_images: int, n_texts: int) -> tuple[list[Image.Image], list[str]]:
    """Random 320x240 RGB photos-to-be and the shipped WordNet digit sentences (varied lengths)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(n_images)]
    texts = [row["text"] for row in digits_data.load_digit_texts()]
    return images, (texts * (n_texts // len(texts) + 1))[:n_texts]


def run(cases: list[tuple[str, Space, int]], images: list, texts: list[str], batch_size: int) -> list[dict]:
    """Image and text rows for each ``(label, space, items)``: the first ``items`` images and texts."""
    rows = []
    for label, space, n in cases:
        rows.append(measure(space, "image", images[:n], label=label, batch_size=batch_size))
        rows.append(measure(space, "text", texts[:n], label=label, batch_size=batch_size))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="runs/throughput-clip.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, texts = inputs(n_images=256, n_texts=256)
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("openclip tiny", tiny_openclip(Path(tmp, "openclip-tiny")), 256),
            ("hf-clip tiny", hf_clip(Path(tmp, "hf-tiny"), TINY_HF), 256),
            ("openclip ViT-B-32 (random)", OpenCLIPSpace("ViT-B-32"), 96),
            ("hf-clip ViT-B/32 (random)", hf_clip(Path(tmp, "hf-b32"), transformers.CLIPConfig()), 96),
        ]
        save(run(cases, images, texts, args.batch_size), args.json)


if __name__ == "__main__":
    main()
