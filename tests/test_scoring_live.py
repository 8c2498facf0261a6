"""Scoring against live upstream (torch + transformers 4.37.2)."""
import numpy as np
import pytest
import refimpl
from golden import compare_tensor
from refimpl.scoring import token_logprobs


def test_shipped_model_scores_like_upstream():
    """The README's main job, end to end, against upstream's tokenizer and model (skipped without torch)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from refimpl.cli import SHIPPED_MODEL

    texts = ["The license grants you the right to copy and distribute the software.",
             "Return a new list containing all items from the iterable in ascending order.  Ünïcödé ✓"]
    theirs_tok = transformers.AutoTokenizer.from_pretrained(SHIPPED_MODEL, use_fast=False)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(SHIPPED_MODEL).eval()
    ours_tok = refimpl.load_tokenizer(SHIPPED_MODEL)
    model = refimpl.from_pretrained(SHIPPED_MODEL)
    for text in texts:
        ids = ours_tok(text)["input_ids"]
        assert list(ids) == theirs_tok(text)["input_ids"]
        with torch.no_grad():
            loss = theirs(torch.tensor([ids]), labels=torch.tensor([ids])).loss.numpy()
        ours = -token_logprobs(model, np.array([ids])).mean()
        problems = compare_tensor(np.asarray(ours, np.float32), loss, "float32", text)
        assert not problems, problems
