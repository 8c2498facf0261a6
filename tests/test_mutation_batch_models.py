"""The batch jobs and the scoring functions on small golden checkpoints: `generate`'s batches (prompts
grouped by length, padding counted, one at a time when sampling, new tokens cut at the first eos, the
position limit at its bound), the scoring functions' refusals and their independent formulations
(log-softmax of the model's own logits), `inspect`'s example input, the process settings of
refimpl.runtime and the trace's nesting rules."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl import cli, runtime, scoring
from refimpl.batch.generating import GenerateJob
from refimpl.batch.lines import LineError

ROOT = Path(__file__).resolve().parent.parent
TINY = GOLDEN / "opt" / "preln-OPTForCausalLM"  # vocabulary of 37, 24 positions, eos 2
LED = GOLDEN / "led" / "window-6-LEDForConditionalGeneration"
NEZHA_MLM = GOLDEN / "nezha" / "k2-NezhaForMaskedLM"


def log_softmax(logits):  # [..., V] float64
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def raw(*rows):
    return [(i, " ".join(map(str, r)).encode()) for i, r in enumerate(rows)]


# ------------------------------------------------------------------------------ generate's batches

@pytest.fixture(scope="module")
def continuer():
    return GenerateJob(model=str(TINY), format="ids", batch_size=2, options=(("max_new_tokens", 3),)).load()


def test_generate_groups_prompts_by_length(continuer):
    """Prompts of 1, 5, 1, 5 tokens in batches of 2: sorted, [1, 1] and [5, 5], no padding at all."""
    batches = list(continuer.score_window(raw([5], [5, 6, 7, 8, 9], [6], [7, 8, 9, 10, 11])))
    assert [[r["index"] for r in b.records] for b in batches] == [[0, 2], [1, 3]]
    assert [b.padding for b in batches] == [0, 0]
    assert [b.tokens for b in batches] == [sum(len(r["new_token_ids"]) for r in b.records) for b in batches]
    batches = list(continuer.score_window(raw([5], [5, 6, 7], [6, 7, 8, 9, 10])))  # [1, 3] then [5]
    assert [b.padding for b in batches] == [2, 0]


def test_generate_error_records_come_first(continuer):
    batches = list(continuer.score_window(raw([5, 6], [99], [7])))
    assert batches[0].records == [{"index": 1, "error": "line 2: prompt: token id 99 is outside the vocabulary of 37"}]
    assert (batches[0].tokens, batches[0].padding) == (0, 0)
    assert sorted(r["index"] for b in batches[1:] for r in b.records) == [0, 2]


def test_generate_records_are_each_prompt_alone_cut_at_eos(continuer, load_model):
    model = load_model(str(TINY), None, "float32")
    prompts = [[5], [5, 6, 7, 8, 9], [30, 31]]
    records = {r["index"]: r for b in continuer.score_window(raw(*prompts)) for r in b.records}
    for index, prompt in enumerate(prompts):
        out = model.generate(np.array([prompt]), max_new_tokens=3)[0, len(prompt):].tolist()
        cut = out[:out.index(2) + 1] if 2 in out else out
        assert records[index] == {"index": index, "new_token_ids": cut}, index


def test_record_stops_at_the_first_eos(continuer):
    assert continuer.record(4, np.array([7, 2, 9, 2])) == {"index": 4, "new_token_ids": [7, 2]}
    assert continuer.record(0, np.array([7, 8])) == {"index": 0, "new_token_ids": [7, 8]}
    assert continuer.record(0, np.array([2, 2])) == {"index": 0, "new_token_ids": [2]}


def test_continuation_is_the_decoded_new_text():
    continuer = GenerateJob(model=str(cli.SHIPPED_MODEL), options=(("max_new_tokens", 4),)).load()
    record = continuer.record(0, np.array([100, 200, continuer.eos[0], 300]))
    assert record["new_token_ids"] == [100, 200, continuer.eos[0]]
    assert record["continuation"] == continuer.tokenizer.decode([100, 200], skip_special_tokens=False)


def test_prompt_and_new_tokens_at_the_position_limit(continuer):
    assert continuer.max_new_tokens == 3 and continuer.limit == 24
    assert continuer.parse(" ".join(["5"] * 21)) == [5] * 21
    with pytest.raises(LineError, match="^prompt: 22 tokens \\+ 3 new tokens exceed the model's limit of 24 positions$"):
        continuer.parse(" ".join(["5"] * 22))
    with pytest.raises(LineError, match=r"^prompt: 0 token\(s\): scoring needs at least 1$"):
        continuer.parse(",")


def test_sampling_generates_one_prompt_at_a_time():
    job = GenerateJob(model=str(TINY), format="ids", batch_size=4, seed=3,
                      options=(("max_new_tokens", 2), ("do_sample", True)))
    batches = list(job.load().score_window(raw([5], [6, 7], [8])))
    assert [len(b.records) for b in batches] == [1, 1, 1] and all(b.padding == 0 for b in batches)
    again = list(job.load().score_window(raw([5], [6, 7], [8])))
    assert [b.records for b in batches] == [b.records for b in again]


@pytest.mark.parametrize("size", [0, -1, 2.0, None])
def test_generate_refuses_a_bad_batch_size_before_any_line(size):
    with pytest.raises(ValueError, match=rf"^batch_size \(--batch-size\) must be an integer >= 1, got {size!r}$"):
        GenerateJob(model=str(TINY), format="ids", batch_size=size).load()


def test_led_prompt_is_the_encoders_input(load_model):
    model = load_model(str(LED), None, "float32")
    continuer = GenerateJob(model=str(LED), format="ids", batch_size=2, options=(("max_new_tokens", 3),)).load()
    limit = model.config.max_encoder_position_embeddings
    assert continuer.parse(" ".join(["5"] * limit)) == [5] * limit
    with pytest.raises(LineError, match=f"^prompt: {limit + 1} tokens exceed the model's limit of {limit} positions$"):
        continuer.parse(" ".join(["5"] * (limit + 1)))
    prompt = [0, 5, 6, 7, 2]
    (batch,) = continuer.score_window(raw(prompt))
    glob = np.zeros((1, len(prompt)), np.int64)
    glob[0, 0] = 1
    out = model.generate(np.array([prompt]), global_attention_mask=glob, max_new_tokens=3)[0, 1:].tolist()
    eos = model.config.eos_token_id
    assert batch.records[0]["new_token_ids"] == (out[:out.index(eos) + 1] if eos in out else out)


# ------------------------------------------------------------------------------ scoring functions

def test_token_logprobs_is_log_softmax_of_the_logits_and_zero_at_padding(load_model):
    model = load_model(str(TINY), None, "float64")
    ids = np.array([[5, 6, 7, 8, 9], [10, 11, 12, 1, 1]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = scoring.token_logprobs(model, ids, mask)
    assert got.shape == (2, 4)
    for row, n in ((0, 5), (1, 3)):
        logits = model(input_ids=ids[row:row + 1, :n], return_dict=True).logits[0]  # [n, V]
        expected = log_softmax(logits)[np.arange(n - 1), ids[row, 1:n]]
        np.testing.assert_allclose(got[row, :n - 1], expected, rtol=1e-10, err_msg=f"row {row}")
        assert (got[row, n - 1:] == 0).all()
    np.testing.assert_allclose(scoring.token_logprobs(model, ids[:1]), got[:1], rtol=1e-12)


def test_token_logprobs_refuses_other_heads_and_bad_ids(load_model):
    model = load_model(str(GOLDEN / "opt" / "preln-OPTForSequenceClassification"), None, "float32")
    with pytest.raises(ValueError, match=r"^token_logprobs needs a causal language model; OPTForSequenceClassification "
                                         r"is not one \(the opt causal LMs: OPTForCausalLM\)$"):
        scoring.token_logprobs(model, np.array([[1, 2]]))
    model = load_model(str(TINY), None, "float32")
    with pytest.raises(ValueError, match=r"^input_ids holds id 37, outside the vocabulary of 37"):
        scoring.token_logprobs(model, np.array([[1, 37]]))


def test_seq2seq_labels_outside_the_vocabulary_are_refused(load_model):
    model = load_model(str(LED), None, "float32")
    vocab = model.config.vocab_size
    source = np.array([[0, 5, 6, 2]])
    for bad in (vocab, -5):
        with pytest.raises(ValueError, match=rf"^labels holds id {bad}, outside the vocabulary of {vocab}"):
            scoring.seq2seq_token_logprobs(model, source, np.array([[5, bad, 2]]))
    got = scoring.seq2seq_token_logprobs(model, source, np.array([[5, 6, -100]]))
    assert got.shape == (1, 3) and got[0, 2] == 0 and (got[0, :2] < 0).all()


def test_seq2seq_refuses_other_heads(load_model):
    model = load_model(str(TINY), None, "float32")
    with pytest.raises(ValueError, match=r"^seq2seq_token_logprobs needs an encoder-decoder language model; "
                                         r"OPTForCausalLM is not one"):
        scoring.seq2seq_token_logprobs(model, np.array([[1, 2]]), np.array([[1, 2]]))


def test_sliding_windows_bounds(load_model):
    model = load_model(str(TINY), None, "float64")
    ids = np.random.default_rng(0).integers(3, 37, 30)
    for bad in (0, 24, -2):
        with pytest.raises(ValueError, match=rf"^stride must be in 1\.\.window-1 \(window=24\), got {bad}$"):
            scoring.sliding_token_logprobs(model, ids, stride=bad)
    # default stride: half the window; token t (t >= 24) is scored in the window starting at 12
    got = scoring.sliding_token_logprobs(model, ids)
    np.testing.assert_allclose(got, scoring.sliding_token_logprobs(model, ids, stride=12), rtol=0)
    first = scoring.token_logprobs(model, ids[None, :24])[0]
    second = scoring.token_logprobs(model, ids[None, 12:30])[0]
    np.testing.assert_allclose(got, np.concatenate([first, second[11:]]), rtol=1e-12)
    got = scoring.sliding_token_logprobs(model, ids, window=10, stride=9)
    pieces = [scoring.token_logprobs(model, ids[None, s:s + 10])[0] for s in (0, 9, 18, 27)]
    np.testing.assert_allclose(got, np.concatenate([pieces[0], pieces[1][0:], pieces[2][0:], pieces[3][0:]]),
                               rtol=1e-12)


def test_pseudo_log_likelihood_masks_each_position(load_model):
    model = load_model(str(NEZHA_MLM), None, "float64")
    ids = np.array([2, 7, 9, 11, 13, 3])
    mask_id = 4
    scored = np.array([False, True, True, True, True, False])
    expected = np.zeros(len(ids))
    for i in np.flatnonzero(scored):
        copy = ids.copy()
        copy[i] = mask_id
        logits = model(input_ids=copy[None], return_dict=True).logits[0, i]
        expected[i] = log_softmax(logits)[ids[i]]
    for batch_size in (32, 1, 3):
        got = scoring.pseudo_log_likelihood(model, ids, mask_id, scored=scored, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-10, err_msg=f"batch_size {batch_size}")
    everything = scoring.pseudo_log_likelihood(model, ids, mask_id)
    assert (everything != 0).all() and np.allclose(everything[scored], expected[scored])


def test_pseudo_log_likelihood_refuses_other_heads(load_model):
    model = load_model(str(TINY), None, "float32")
    with pytest.raises(ValueError, match="^pseudo_log_likelihood needs a masked language model; OPTForCausalLM is not"):
        scoring.pseudo_log_likelihood(model, [1, 2], 3)


def test_classify_softmax_and_sigmoid(load_model):
    model = load_model(str(GOLDEN / "opt" / "preln-OPTForSequenceClassification"), None, "float64")
    ids = np.array([[5, 6, 7, 2]])
    logits, probs = scoring.classify(model, ids)
    np.testing.assert_allclose(probs, np.exp(log_softmax(logits)), rtol=1e-12)
    multi = refimpl.from_pretrained(str(GOLDEN / "opt" / "preln-OPTForSequenceClassification"), dtype="float64")
    multi.config = dataclasses.replace(multi.config, problem_type="multi_label_classification")
    logits, probs = scoring.classify(multi, ids)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-12)
    with pytest.raises(ValueError, match="^classify needs a sequence classifier; OPTForCausalLM is not one$"):
        scoring.classify(load_model(str(TINY), None, "float32"), ids)


# ------------------------------------------------------------------------------ inspect's example input

@pytest.mark.parametrize("checkpoint", [TINY, GOLDEN / "nezha" / "k2-NezhaForMultipleChoice", LED,
                                        cli.SHIPPED_MODEL])
@pytest.mark.parametrize("length", [2, 5, 40])
def test_example_inputs(load_model, checkpoint, length):
    """bos, then ordinary tokens 3, 4, ... in turn (cycling through the vocabulary, skipping the specials),
    then eos; NEZHA's multiple choice: the same row for both choices."""
    model = load_model(str(checkpoint), None, "float32")
    cfg = model.config
    specials = {t for t in (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) if t is not None}
    ordinary = min(set(range(cfg.vocab_size)) - specials)
    row = [3 + i % (cfg.vocab_size - 3) for i in range(length)]
    row = [ordinary if t in specials else t for t in row]
    if cfg.bos_token_id is not None:
        row[0] = cfg.bos_token_id
    if cfg.eos_token_id is not None:
        row[-1] = cfg.eos_token_id
    ids = cli.example_inputs(model, length)["input_ids"]
    expected = [[row, row]] if model.architecture == "NezhaForMultipleChoice" else [row]
    assert ids.tolist() == expected and ids.dtype == np.int64
    with pytest.raises(ValueError, match="^--length must be at least 2, got 1$"):
        cli.example_inputs(model, 1)


# ------------------------------------------------------------------------------ runtime

def test_plan_workers():
    assert runtime.plan_workers(None, None, cpus=4) == (4, runtime.DEFAULT_BLAS_THREADS) == (4, 1)
    assert runtime.plan_workers(None, 2, cpus=5) == (2, 2)
    assert runtime.plan_workers(None, 8, cpus=4) == (1, 8)
    assert runtime.plan_workers(3, None, cpus=8) == (3, 1)
    assert runtime.plan_workers(1, 1, cpus=8) == (1, 1)
    for workers, threads, name, value in ((0, None, "--workers", "0"), (None, 0, "--threads", "0"),
                                          (True, None, "--workers", "True"), (None, 1.5, "--threads", "1.5")):
        with pytest.raises(ValueError, match=f"^{name} must be a whole number >= 1, got {value}$"):
            runtime.plan_workers(workers, threads, cpus=4)


def test_usable_cpus_is_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5} if pid == 0 else {0}, raising=False)
    assert runtime.usable_cpus() == 3  # this process's mask (pid 0), not another's
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(), raising=False)
    assert runtime.usable_cpus() == 1


def test_set_threads_exports_the_count(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "9")
    runtime.set_threads(2)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"
    from refimpl import accel

    assert accel._max_threads == 2
    runtime.set_threads(1)
    assert accel._max_threads == 1 and os.environ["OPENBLAS_NUM_THREADS"] == "1"


def test_process_settings_in_a_fresh_process():
    """Before NumPy loads, the thread timeout is set (a value of the user's kept) and malloc is tuned; after,
    the timeout is reported only when set."""
    code = ("import os, sys; import refimpl.runtime as r; assert 'numpy' not in sys.modules; "
            "print(r.configure_process(), os.environ.get('OPENBLAS_THREAD_TIMEOUT'), r.tune_malloc()); "
            "import numpy; print(r.shorten_blas_spin())")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["{'malloc_tuned': True, 'blas_spin_shortened': True} 20 True", "True"]
    env["OPENBLAS_THREAD_TIMEOUT"] = "4"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[0].endswith(" 4 True")
    code = "import numpy, refimpl.runtime as r; print(r.shorten_blas_spin())"
    env.pop("OPENBLAS_THREAD_TIMEOUT")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_tune_malloc_elsewhere(monkeypatch):
    monkeypatch.setattr(runtime, "_done", False)
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.tune_malloc() is False
    monkeypatch.setattr(runtime.sys, "platform", "linux")

    class NoMallopt:
        def __init__(self, *_):
            pass

    monkeypatch.setattr(runtime.ctypes, "CDLL", NoMallopt)
    assert runtime.tune_malloc() is False


def test_main_entry_configures_the_process_first(monkeypatch, capsys):
    import refimpl.__main__ as entry

    calls = []
    monkeypatch.setattr(runtime, "configure_process", lambda: calls.append("configured"))
    with pytest.raises(SystemExit) as exit:
        entry.main(["--version"])
    assert exit.value.code == 0 and calls == ["configured"]
    assert capsys.readouterr().out.startswith("refimpl ")
    assert entry.main(["inspect", "--length", "2", "--model", str(TINY)]) == 0


# ------------------------------------------------------------------------------ trace

def test_trace_nesting_and_per_call(load_model):
    from refimpl import trace

    assert not trace.active() and not trace.internals_active()
    params = type("P", (dict,), {"path": "model.layer"})()
    with trace.tracing() as outer:
        assert trace.active() and not trace.internals_active()
        trace.record(params, "fc", np.ones(2))
        trace.record(params, "fc", np.zeros(2))  # first output kept
        trace.record(params, "none", None)
        trace.record_internal(params, "scores", np.ones(1))  # internals off
        with trace.tracing(internals=True) as inner:
            assert trace.internals_active()
            value = np.arange(3.0)
            assert trace.record_internal(params, "probs", value) is value
            trace.record_internal(None, "probs", value)
            trace.record_internal(params, "none", None)
            value[0] = 9  # the trace holds a copy
        assert list(inner) == ["model.layer#probs"] and inner["model.layer#probs"].tolist() == [0, 1, 2]
        trace.record_computed(params, "rel", lambda: np.full(2, 7.0))
    assert list(outer) == ["model.layer.fc", "model.layer.rel"] and outer["model.layer.fc"].tolist() == [1, 1]
    assert not trace.active()
    trace.record_computed(params, "never", lambda: 1 / 0)  # not computed without a trace
    assert trace.path_of(params) == "model.layer" and trace.path_of({}, "lm_head") == "lm_head"
    model = load_model(str(TINY), None, "float32")
    with trace.tracing(per_call=True, internals=True) as t:
        model.generate(np.array([[5, 6]]), max_new_tokens=2)
    assert len(t.calls) == 2 and all(c.internals for c in t.calls)
    assert t.calls[0]["model.decoder.layers.0.fc1"].shape[0] == 2 and t.calls[1]["model.decoder.layers.0.fc1"].shape[0] == 1
    assert any(name.endswith("#probs") for name in t.calls[1])
    with trace.tracing() as t:
        with trace.model_call():
            trace.record(params, "x", np.ones(1))
    assert t.calls is None and list(t) == ["model.layer.x"]


# ------------------------------------------------------------------------------ the scorer's set-up

def test_masked_lm_scoring_needs_a_tokenizer_even_for_ids():
    from refimpl.batch.jobs import ScoreJob

    with pytest.raises(ValueError, match=rf"^{NEZHA_MLM} has no usable tokenizer \(.*\); masked-LM scoring needs it "
                                         r"\(for its mask token\)$"):
        ScoreJob(model=str(NEZHA_MLM), format="ids").load()


def test_ids_need_no_tokenizer_but_text_does():
    from refimpl.batch.jobs import ScoreJob

    scorer = ScoreJob(model=str(TINY), format="ids").load()
    assert scorer.tokenizer is None and scorer.kind == "causal" and scorer.position_limit() == 24
    with pytest.raises(ValueError, match=rf"^{TINY} has no usable tokenizer \(.*\); pass token ids \(--format ids, "
                                         r"or --format jsonl with \"input_ids\"\)$"):
        ScoreJob(model=str(TINY), format="text").load()


def test_a_classifier_scores_one_text_per_pass():
    from refimpl.batch.jobs import ScoreJob

    scorer = ScoreJob(model=str(GOLDEN / "opt" / "preln-OPTForSequenceClassification"), format="ids",
                      batch_size=8).load()
    assert scorer.kind == "classify" and scorer.position_limit() == float("inf")
    batches = list(scorer.score_window(raw([2, 5, 6], [2, 7], [2, 8, 9, 10])))
    assert [len(b.records) for b in batches] == [1, 1, 1]
    assert [b.padding for b in batches] == [0, 0, 0] and [b.tokens for b in batches] == [2, 3, 4]
    assert [b.records[0]["index"] for b in batches] == [1, 0, 2]  # shortest first


def test_causal_batches_share_a_pass_with_padding_counted():
    from refimpl.batch.jobs import ScoreJob

    scorer = ScoreJob(model=str(TINY), format="ids", batch_tokens=100).load()
    long = list(range(3, 33))  # 30 tokens: longer than the table of 24, scored alone by sliding windows
    batches = list(scorer.score_window(raw([5, 6, 7], long, [8, 9], [99, 5])))
    assert batches[0].records == [{"index": 3, "error": "line 4: text: token id 99 is outside the vocabulary of 37"}]
    (batch,) = batches[1:]
    assert sorted(r["index"] for r in batch.records) == [0, 1, 2]
    assert batch.tokens == 35 and batch.padding == 1  # [2, 3] padded to 3; the long text alone, unpadded
    record = {r["index"]: r for r in batch.records}[1]
    assert record["num_tokens"] == 29


def test_usable_cpus_without_an_affinity_mask(monkeypatch):
    def unsupported(pid):
        raise OSError("not here")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert runtime.usable_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert runtime.usable_cpus() == 1


def test_set_threads_uses_the_blas_setter(monkeypatch):
    from refimpl import accel

    calls = []
    monkeypatch.setattr(accel, "blas_thread_setter", lambda library: calls.append(library) or calls.append)
    assert runtime.set_threads(3) is True and calls == ["numpy", 3]
    monkeypatch.setattr(accel, "blas_thread_setter", lambda library: None)
    assert runtime.set_threads(1) is False and os.environ["OPENBLAS_NUM_THREADS"] == "1"


# ------------------------------------------------------------------------------ the worker side

def test_worker_start_ignores_sigint_and_sets_threads(monkeypatch):
    import signal

    from refimpl.batch import worker

    calls = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append((sig, handler)))
    monkeypatch.setattr(runtime, "tune_malloc", lambda: calls.append("malloc"))
    monkeypatch.setattr(runtime, "set_threads", lambda n: calls.append(("threads", n)))
    worker.start_worker(3)
    assert calls == [(signal.SIGINT, signal.SIG_IGN), "malloc", ("threads", 3)]


def test_worker_scores_in_windows_and_returns_input_order():
    from refimpl.batch import worker
    from refimpl.batch.jobs import ScoreJob

    job = ScoreJob(model=str(TINY), format="ids", batch_tokens=1000)
    rows = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [99], [14, 15]]
    assert worker.scorer(job) is worker.scorer(job)  # loaded once per process
    whole = worker.score_lines(job, raw(*rows), 512)
    assert [r["index"] for r in whole.records] == [0, 1, 2, 3, 4] and "error" in whole.records[3]
    assert (whole.tokens, whole.padding) == (11, 2 + 1 + 2)  # one pass of 4 rows x 4 positions
    windows = worker.score_lines(job, raw(*rows), 2)  # [4, 2] | [3, err] | [2]
    assert [r["index"] for r in windows.records] == [0, 1, 2, 3, 4]
    assert (windows.tokens, windows.padding) == (11, 2)
    for a, b in zip(whole.records, windows.records):
        assert a.keys() == b.keys() and a.get("num_tokens") == b.get("num_tokens")
        if "log_likelihood" in a:
            assert b["log_likelihood"] == pytest.approx(a["log_likelihood"], rel=2e-5)


def test_led_pairs_are_checked_side_by_side(load_model):
    from refimpl.batch.jobs import ScoreJob

    cfg = load_model(str(LED), None, "float32").config
    scorer = ScoreJob(model=str(LED), format="jsonl").load()
    assert scorer.kind == "seq2seq" and scorer.position_limit() == float("inf")
    assert scorer.parse('{"source_ids": [0, 5], "target_ids": [7]}') == ([0, 5], [7])
    source, target = cfg.max_encoder_position_embeddings, cfg.max_decoder_position_embeddings
    assert scorer.parse(f'{{"source_ids": {[5] * source}, "target_ids": {[5] * target}}}') == ([5] * source,
                                                                                              [5] * target)
    with pytest.raises(LineError, match=f"^source: {source + 1} tokens exceed the model's limit of {source} positions$"):
        scorer.parse(f'{{"source_ids": {[5] * (source + 1)}, "target_ids": [5]}}')
    with pytest.raises(LineError, match=f"^target: {target + 1} tokens exceed the model's limit of {target} positions$"):
        scorer.parse(f'{{"source_ids": [5], "target_ids": {[5] * (target + 1)}}}')
    with pytest.raises(LineError, match=r"^target: 0 token\(s\): scoring needs at least 1$"):
        scorer.parse('{"source_ids": [5], "target_ids": []}')
    with pytest.raises(ValueError, match=r"^LEDForConditionalGeneration scores source/target pairs: pass --format jsonl"):
        ScoreJob(model=str(LED), format="ids").load()
    (batch,) = scorer.score_window([(0, b'{"source_ids": [0, 5, 6, 2], "target_ids": [7, 8]}'),
                                    (1, b'{"source_ids": [0, 9, 2], "target_ids": [7, 8, 9]}')])
    assert batch.tokens == 4 + 2 + 3 + 3 and batch.padding == 1 + 1  # per side
    first = {r["index"]: r for r in batch.records}[1]
    assert list(first) == ["index", "log_likelihood", "num_tokens", "perplexity", "token_logprobs"]
    assert first["num_tokens"] == 3 and len(first["token_logprobs"]) == 3
    assert first["log_likelihood"] == pytest.approx(sum(first["token_logprobs"]), rel=1e-6)


# ------------------------------------------------------------------------------ diff's options reach the comparison

def test_diff_padding_option_and_the_mask_from_the_inputs(tmp_path, capfd):
    """A dump equal to refimpl's float64 trace but at one padded position of one tensor: lenient (the default)
    agrees, strict diverges there; the mask is taken from --inputs."""
    from safetensors.numpy import save_file

    from refimpl.compare import trace_model

    inputs = {"input_ids": np.array([[2, 5, 6, 7, 1]]), "attention_mask": np.array([[1, 1, 1, 1, 0]])}
    np.savez(tmp_path / "in.npz", **inputs)
    trace, _ = trace_model(refimpl.from_pretrained(TINY, dtype="float64"), inputs)
    name = "model.decoder.layers.0.self_attn.out_proj"
    assert trace[name].shape[:2] == (1, 5)
    trace[name] = trace[name].copy()
    trace[name][0, 4] += 1.0
    save_file({k: np.ascontiguousarray(v) for k, v in trace.items()}, str(tmp_path / "dump.safetensors"))
    argv = ["diff", "--model", str(TINY), "--inputs", str(tmp_path / "in.npz"), "--against",
            str(tmp_path / "dump.safetensors"), "--json"]
    assert cli.main(argv) == 0
    capfd.readouterr()
    assert cli.main(argv + ["--padding", "strict"]) == 1
    report = __import__("json").loads(capfd.readouterr().out)
    assert report["first_divergence"]["name"] == name


def test_a_two_label_classifier_names_its_labels(tmp_path):
    """The golden 3-label classifier cut to its first 2 rows, labels "neg" and "pos": a record has the label
    of the larger logit and the softmax of the two logits under their names."""
    import json

    from safetensors.numpy import load_file, save_file

    from refimpl.batch.jobs import ScoreJob

    source = GOLDEN / "opt" / "preln-OPTForSequenceClassification"
    weights = load_file(str(source / "model.safetensors"))
    weights["score.weight"] = np.ascontiguousarray(weights["score.weight"][:2])
    save_file(weights, str(tmp_path / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    config.update(id2label={"0": "neg", "1": "pos"}, label2id={"neg": 0, "pos": 1})
    (tmp_path / "config.json").write_text(json.dumps(config))
    scorer = ScoreJob(model=str(tmp_path), format="ids", dtype="float64").load()
    (batch,) = scorer.score_window([(0, b"2 5 6 7")])
    (record,) = batch.records
    assert list(record) == ["index", "logits", "label", "probabilities"] and len(record["logits"]) == 2
    assert list(record["probabilities"]) == ["neg", "pos"]
    expected = np.exp(log_softmax(record["logits"]))
    np.testing.assert_allclose(list(record["probabilities"].values()), expected, rtol=1e-12)
    assert record["label"] == ["neg", "pos"][int(np.argmax(record["logits"]))]


def test_the_scorer_memory_maps_the_weights():
    """The processes of a run share the weights' pages: the scorer's arrays are views of the file's mapping."""
    import mmap

    from refimpl.batch.jobs import ScoreJob

    scorer = ScoreJob(model=str(TINY), format="ids").load()
    for name, value in scorer.model.params.items():
        base = value
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
        assert isinstance(base, mmap.mmap), f"{name} is not memory-mapped"


def test_log_likelihood_is_summed_in_float64():
    """Three float32 terms of -0.1 add up, in float64, to 3 x float32(-0.1) (a float32 sum rounds to -0.3f)."""
    from refimpl.batch.jobs import likelihood_record

    terms = np.full(3, -0.1, np.float32)
    assert likelihood_record(0, terms)["log_likelihood"] == 3 * float(np.float32(-0.1))


def test_masked_lm_records(tmp_path):
    """Only the non-special tokens are scored; a text of special tokens alone gets an error record."""
    from test_scoring import nezha_dir_with_vocab

    from refimpl.batch.jobs import ScoreJob

    directory = nezha_dir_with_vocab(tmp_path, "NezhaForMaskedLM")
    scorer = ScoreJob(model=str(directory), format="ids", dtype="float64").load()
    batches = list(scorer.score_window([(0, b"2 5 6 7 3"), (1, b"2 3")]))
    records = {r["index"]: r for b in batches for r in b.records}
    assert records[1] == {"index": 1, "error": "line 2: no token to score besides special tokens"}
    assert list(records[0]) == ["index", "pseudo_log_likelihood", "num_tokens", "pseudo_perplexity"]
    assert records[0]["num_tokens"] == 3
    model = refimpl.from_pretrained(directory, dtype="float64")
    total = 0.0
    for i in (1, 2, 3):
        ids = np.array([2, 5, 6, 7, 3])
        ids[i] = 4  # [MASK]
        total += log_softmax(model(input_ids=ids[None], return_dict=True).logits[0, i])[[2, 5, 6, 7, 3][i]]
    assert records[0]["pseudo_log_likelihood"] == pytest.approx(total, rel=1e-12)
    assert records[0]["pseudo_perplexity"] == pytest.approx(np.exp(-total / 3), rel=1e-12)
    assert all(b.padding == 0 and len(b.records) == 1 for b in batches)


def test_token_logprobs_with_left_padding_equal_the_row_alone(load_model):
    """The mask reaches the model: a left-padded row scores its tokens as the row alone does (OPT's positions
    follow the mask), and the positions after padding or of padding are 0."""
    model = load_model(str(TINY), None, "float64")
    alone = scoring.token_logprobs(model, np.array([[5, 6, 7]]))[0]
    padded = scoring.token_logprobs(model, np.array([[1, 1, 5, 6, 7]]), np.array([[0, 0, 1, 1, 1]]))[0]
    np.testing.assert_allclose(padded[2:], alone, rtol=1e-10)
    assert (padded[:2] == 0).all()
