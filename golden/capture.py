"""Regenerate the golden tensors: `python golden/capture.py [family ...]`.

Needs torch and transformers==4.37.2 (`pip install -e ".[upstream]"`); nothing else in the project
does. Deterministic: the same versions give the same files bit for bit. Each family's script
(`capture_<family>.py`) builds tiny upstream models and cases; `common.py` runs and writes them;
this driver writes `manifest.json` (versions, seed, checkpoints and case names).
"""
from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from common import ROOT, SEED, versions  # noqa: E402

FAMILIES = sorted(p.stem[len("capture_"):] for p in HERE.glob("capture_*.py"))  # capture(manifest_entries) each


def main(argv):
    families = argv or FAMILIES
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        sys.exit(f"unknown families {unknown}; choose from {FAMILIES}")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # same reduction order on every machine
    manifest_file = ROOT / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
    manifest.update({"versions": versions(), "seed": SEED})
    manifest.setdefault("families", {})
    for family in families:
        shutil.rmtree(ROOT / family, ignore_errors=True)
        entries = []
        importlib.import_module(f"capture_{family}").capture(entries)
        manifest["families"][family] = entries
        print(f"{family}: {len(entries)} checkpoints, {sum(len(e['cases']) for e in entries)} cases")
    manifest["families"] = dict(sorted(manifest["families"].items()))
    manifest_file.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
