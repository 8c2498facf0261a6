"""Golden cases of NEZHA checkpoints saved after upstream's `prune_heads` (needs torch, transformers==4.37.2).

`python golden/capture_pruned.py` writes golden/pruned/<checkpoint>/ (config.json with pruned_heads, the
smaller query/key/value/output weights, a fully pruned layer whose zero-size weights save_pretrained drops)
and golden/pruned/index.json (the entries capture.py's manifest would hold); tests/test_forward_interface.py
replays them. `python golden/capture.py pruned` would add them to manifest.json as well.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from transformers import NezhaConfig, NezhaForMaskedLM, NezhaForSequenceClassification, NezhaModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_nezha import exact_relative_positions  # noqa: E402
from common import ROOT, SEED, Case, Step, randomize_, seed_everything, write_checkpoint  # noqa: E402

B, T = 3, 7
BASE = dict(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=24,
            max_position_embeddings=16, max_relative_position=3, type_vocab_size=2, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
PRUNINGS = {  # layer 1 loses every head; the others keep different numbers
    "mixed": {0: [1, 3], 1: [0, 1, 2, 3], 2: [2]},
    "uniform": {0: [0, 2], 1: [1, 3], 2: [0, 1]},  # two heads everywhere: a [L, 2] head mask applies
}
EVERYTHING = {"output_attentions": True, "output_hidden_states": True}


def cases(rng, cls, pruning):
    ids = rng.integers(2, BASE["vocab_size"], size=(B, T))
    mask = (np.arange(T)[None, :] < np.array([T, 5, 3])[:, None]).astype(np.int64)
    types = (np.arange(T)[None, :] >= T // 2).astype(np.int64).repeat(B, axis=0)
    step = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    result = [Case("plain", [Step(step, EVERYTHING)]),
              Case("head_mask_per_layer", [Step({**step, "head_mask": np.array([[1.0], [0.5], [0.0]])}, EVERYTHING)])]
    if pruning == "uniform":
        result.append(Case("head_mask", [Step({**step, "head_mask": np.array([[1.0, 0.0], [0.5, 1.0], [1.0, 1.0]])},
                                              EVERYTHING)]))
    if cls is NezhaForMaskedLM:
        result.append(Case("labels", [Step({**step, "labels": np.where(mask == 1, ids, -100)}, EVERYTHING)]))
    if cls is NezhaForSequenceClassification:
        result.append(Case("labels", [Step({**step, "labels": rng.integers(0, 2, B)}, EVERYTHING)]))
    return result


def capture(manifest):
    seed_everything(SEED)
    with exact_relative_positions():  # the float64 runs exact (golden/capture_nezha.py)
        for p, (name, pruning) in enumerate(PRUNINGS.items()):
            for c, cls in enumerate((NezhaModel, NezhaForMaskedLM, NezhaForSequenceClassification)):
                model = cls(NezhaConfig(**BASE))
                randomize_(model, SEED + 10 * p + c)
                model.prune_heads(pruning)
                rng = np.random.default_rng(SEED + 10 * p + c)
                manifest.append(write_checkpoint("pruned", f"{name}-{cls.__name__}", model, cases(rng, cls, name)))


if __name__ == "__main__":
    import torch

    torch.use_deterministic_algorithms(True)  # as capture.py runs every family
    torch.set_num_threads(1)
    entries = []
    capture(entries)
    (ROOT / "pruned" / "index.json").write_text(json.dumps(entries, indent=1) + "\n")
    print(f"pruned: {len(entries)} checkpoints, {sum(len(e['cases']) for e in entries)} cases")
