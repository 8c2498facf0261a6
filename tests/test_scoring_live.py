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


def _led_pairs(rng, batch, vocab):  # right-padded sources "<s> w .. </s>" and labels (-100 padding)
    from refimpl.batch.jobs import padded

    sources = [[0, *rng.integers(3, vocab, rng.integers(1, 12)), 2] for _ in range(batch)]
    targets = [[0, *rng.integers(3, vocab, rng.integers(0, 8)), 2] for _ in range(batch)]
    ids, mask = padded(sources, 1)
    labels, _ = padded(targets, -100)
    return ids, mask, labels


def test_led_seq2seq_scores_match_upstream_loss(tmp_path_factory):
    """seq2seq_token_logprobs on random-weight tiny LEDs (hypothesis-drawn shapes, float32 and float64) against
    upstream's forward with labels: the loss, and log_softmax(logits) at every label (the whole tensor)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from hypothesis import HealthCheck, given, settings, strategies as st
    from live import randomize_

    from refimpl.scoring import seq2seq_token_logprobs

    cpu = {"AVX2": "avx2", "AVX512": "avx512"}.get(torch.backends.cpu.get_cpu_capability())

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(1, 2), st.sampled_from([4, 8]), st.integers(1, 3), st.integers(10, 40), st.booleans(),
           st.integers(0, 2**16))
    def check(heads, window, batch, vocab, use_global, seed):
        cfg = transformers.LEDConfig(vocab_size=vocab, d_model=4 * heads, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=8,
                                     decoder_ffn_dim=8, attention_window=window, max_encoder_position_embeddings=32,
                                     max_decoder_position_embeddings=16, dropout=0.0, attention_dropout=0.0,
                                     activation_dropout=0.0, pad_token_id=1, eos_token_id=2, bos_token_id=0,
                                     decoder_start_token_id=2)
        torch.manual_seed(seed)
        theirs = transformers.LEDForConditionalGeneration(cfg).eval()
        with torch.no_grad():
            randomize_(theirs, seed)
            theirs.final_logits_bias.normal_(0, 1.0)  # a bias that matters
        directory = tmp_path_factory.mktemp("led")
        theirs.save_pretrained(directory, safe_serialization=True)
        ids, mask, labels = _led_pairs(np.random.default_rng(seed), batch, vocab)
        glob = np.zeros_like(mask)
        glob[:, 0] = 1
        extra = {"global_attention_mask": glob} if use_global else {}
        for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
            islands = {"islands": "upstream", "islands_cpu": cpu} if dtype == "float64" and cpu else {}
            model = refimpl.from_pretrained(directory, dtype=dtype, **islands)
            ours = seq2seq_token_logprobs(model, ids, labels, mask, **extra)
            previous = torch.get_default_dtype()
            torch.set_default_dtype(torch_dtype)  # upstream's float64 decoder mask needs it
            try:
                with torch.no_grad():
                    out = theirs.to(torch_dtype)(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                 labels=torch.tensor(labels),
                                                 **{k: torch.tensor(v) for k, v in extra.items()})
            finally:
                torch.set_default_dtype(previous)
            logp = torch.log_softmax(out.logits, -1).numpy()
            expected = np.where(labels != -100, np.take_along_axis(logp, np.maximum(labels, 0)[..., None], -1)[..., 0], 0)
            case = f"seed {seed} {dtype}"
            problems = compare_tensor(ours.astype(dtype), expected.astype(dtype), dtype, case + " token_logprobs")
            real = labels != -100
            problems += compare_tensor(np.asarray(-ours[real].mean(), dtype), out.loss.numpy().astype(dtype), dtype,
                                       case + " loss")
            assert not problems, problems

    check()
