"""A tour of the Python API on the two small spaces that ship with spacegraph (runs offline, ~1 minute).

python examples/quickstart.py
"""

from spacegraph_spaces.digits_data import load_demo_samples, load_digit_texts

import spacegraph as sg

# 1. Spaces are plugins: list them, then build two by name.
print("registered spaces:", sg.list_spaces())
audio_text = sg.load_space("digits-audio-text")  # stands in for CLAP: {audio, text}
image_text = sg.load_space("digits-image-text")  # stands in for CLIP: {image, text}

# 2. Cache the features a bridge trains on: the shared modality (text) encoded by both spaces, and
#    unpaired memories of audio and images. No audio-image pair is used anywhere.
samples = load_demo_samples()
texts = [row["text"] for row in load_digit_texts()]
store = sg.FeatureStore("runs/quickstart/features")
features = sg.BridgeFeatures(
    overlap_x=store.encode(audio_text, "text", "digit-texts", texts),
    overlap_y=store.encode(image_text, "text", "digit-texts", texts),
    memory_x=store.encode(audio_text, "audio", "audio-memory", samples["audio_memory_paths"]),
    memory_y=store.encode(image_text, "image", "image-memory", samples["image_memory"]),
)

# 3. Train a C-MCR bridge through text and ask the graph for an audio <-> image route.
graph = sg.SpaceGraph([audio_text, image_text])
bridge = graph.train_bridge(
    "digits-audio-text",
    "digits-image-text",
    overlap="text",
    features=features,
    config={"hidden_dim": 512, "out_dim": 256, "steps": 600},
)
print(bridge, bridge.card.quality)
route = graph.connect("audio", "image")
print(route)

# 4. Embed raw inputs and compare: every spoken digit against every handwritten one.
labels, gallery_labels = samples["audio_query_labels"], samples["image_gallery_labels"]
scores = route.encode("audio", samples["audio_query_paths"]) @ route.encode("image", samples["image_gallery"]).T
found = gallery_labels[scores.argmax(dim=1).numpy()]
missed = [i for i, (digit, top) in enumerate(zip(labels, found)) if digit != top]
print(f"{len(labels) - len(missed)} of {len(labels)} spoken digits find an image of their digit first")
for i in [list(labels).index(digit) for digit in range(10)] + missed[:3]:  # one of each digit, then mistakes
    name = samples["audio_query_paths"][i].split("/")[-1]
    print(f"{name} (digit {labels[i]}) -> image of digit {found[i]}{'' if found[i] == labels[i] else '  (a mistake)'}")

# 5. Bridges are folders (JSON card + safetensors); loading checks the spaces' fingerprints.
bridge.save("runs/quickstart/bridge")
reloaded = sg.SpaceGraph([audio_text, image_text], [sg.Bridge.load("runs/quickstart/bridge")])
print(reloaded.connect("audio", "image"))
