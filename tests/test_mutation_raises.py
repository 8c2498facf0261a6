"""Input checks no other test reached: each bad input is refused with a message naming the argument and
the value given (and what was expected), never a raw exception from deeper down."""
import json
import re

import numpy as np
import pytest

import refimpl
from golden import GOLDEN

OPT_LM = GOLDEN / "opt" / "preln-OPTForCausalLM"
TOKENIZERS = GOLDEN / "tokenizers"


def refused(match, fn, *args, error=ValueError, **kwargs):
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"


def test_kernel_and_attention_arguments():
    from refimpl import banded_attention as ba

    refused(r"torch's 'sse' softmax kernel is not reproduced; choose one of \['avx2', 'avx512'\]",
            ba.torch_float32, "sse")
    refused(r"block_size must be >= 1, got 0", ba.block_size_for, 8, 2, 0)
    refused(r"block_size must be >= 1, got -3", ba.block_size_for, 8, 2, -3)
    assert ba.block_size_for(8, 2, 1) == 1


def test_masks_and_float_inputs():
    from refimpl import inputs

    refused(r"attention_mask must have shape \(2, 3\), got \(3, 2\)", inputs.mask, np.ones((3, 2)), (2, 3))
    refused(r"attention_mask must hold 0/1 values, got dtype <U1", inputs.mask, np.array([["a", "b"]]), (1, 2))
    refused(r"attention_mask must hold 0/1 values \(1 = attend, 0 = padding\), got \[2\]", inputs.mask,
            np.array([[1, 2]]), (1, 2))
    assert inputs.mask(np.array([[True, False]]), (1, 2)).tolist() == [[1, 0]]
    refused(r"head_mask must be numeric, got dtype <U1", inputs.floats, np.array(["x"]), np.float64, "head_mask")
    refused(r"head_mask must have shape \(2,\), got \(3,\)", inputs.floats, np.ones(3), np.float64, "head_mask",
            shape=(2,))
    assert inputs.floats(None, np.float64, "x") is None
    assert inputs.floats(np.array([1, 0]), np.float32, "x", shape=(2,)).dtype == np.float32


def test_config_checks(tmp_path):
    from refimpl.config import ConfigError, check_heads, read_config_json

    refused(r"hidden size 10 is not divisible by the number of attention heads 3", check_heads, 10, 3)
    refused(r"hidden size 10 is not divisible by the number of attention heads 0", check_heads, 10, 0)
    check_heads(12, 3)
    (tmp_path / "config.json").write_text("[1, 2]")
    refused(r"config\.json must hold a JSON object, found list", read_config_json, tmp_path, error=ConfigError)
    refused(r"no config\.json at", read_config_json, tmp_path / "absent", error=FileNotFoundError)


def test_model_level_checks():
    from refimpl.models import family
    from refimpl.ops import classification_loss

    refused(r"dtype 'float16' is not supported; use 'float32' or 'float64'", refimpl.from_pretrained, OPT_LM,
            dtype="float16")
    refused(r"model_type 'bert' is not supported; expected one of \['led', 'nezha', 'opt', 'xglm'\]", family, "bert")
    refused(r"problem_type 'ranking' is not one of 'regression', 'single_label_classification', "
            r"'multi_label_classification'", classification_loss, np.zeros((1, 2)), np.array([0]), 2, "ranking")
    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    out = model(input_ids=np.array([[2, 5, 6]]))
    with pytest.raises(KeyError, match="hidden_states"):
        out["hidden_states"]  # a field that is None is not a key, as upstream's ModelOutput
    np.testing.assert_array_equal(out[0], out["logits"])


def test_scoring_checks():
    from refimpl.scoring import classify, pseudo_log_likelihood, sliding_token_logprobs

    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    window = 8
    refused(rf"stride must be in 1\.\.window-1 \(window={window}\), got {window}", sliding_token_logprobs, model,
            np.arange(3, 20), window=window, stride=window)
    refused(r"stride must be in 1\.\.window-1 \(window=8\), got -1", sliding_token_logprobs, model,
            np.arange(3, 20), window=window, stride=-1)
    refused(r"pseudo_log_likelihood needs a masked language model; OPTForCausalLM is not one",
            pseudo_log_likelihood, model, np.array([3, 4]), 1)
    refused(r"classify needs a sequence classifier; OPTForCausalLM is not one", classify, model, np.array([[3, 4]]))


def test_generation_checks():
    from refimpl.generation.constrained import constrained_beam_search  # noqa: F401 (the module under test)
    from refimpl.generation.constraints import DisjunctiveConstraint, PhrasalConstraint

    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    ids = np.array([[2, 5, 6]])
    refused(r"`num_beams` should be divisible by `num_beam_groups`", model.generate, ids, num_beams=3,
            num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=2)
    refused(r"`num_return_sequences` \(3\) has to be smaller or equal to `num_beams` \(2\)", model.generate, ids, num_beams=2,
            num_return_sequences=3, max_new_tokens=2)
    refused(r"generate\(\) needs input_ids", model.generate, None)
    base = refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTModel", dtype="float64")
    refused(r"OPTModel cannot generate; the opt classes that can: OPTForCausalLM", base.generate, ids)
    refused(r"`token_ids` has to be a non-empty list, but is \[\]", PhrasalConstraint, [])
    refused(r"has to be a list of positive integers, but is \[1, -2\]", PhrasalConstraint, [1, -2])
    refused(r"`nested_token_ids` has to be a non-empty list, but is \[\]", DisjunctiveConstraint, [])
    refused(r"`nested_token_ids` has to be a list of lists, but is \[1, 2\]", DisjunctiveConstraint, [1, 2])
    refused(r"has to be a list of positive integers, but is \[\[1\], \[-3\]\]", DisjunctiveConstraint, [[1], [-3]])


def test_tokenizer_checks(tmp_path):
    from refimpl.tokenizers import GPT2Tokenizer, load_tokenizer

    tok = load_tokenizer(TOKENIZERS / "opt")
    refused(r"expected a 1-D sequence of token ids, got an array of shape \(1, 2\)", tok.decode, np.array([[3, 4]]))
    refused(r"token ids must be integers, got 'a' \(str\)", tok.decode, [3, "a"])
    refused(r"token ids must be integers, got True \(bool\)", tok.decode, [True])
    assert tok.decode(np.int64(4)) == tok.decode([4])
    refused(r"batch_decode expects ids of shape \[B, T\], got \(3,\)", tok.batch_decode, np.array([3, 4, 5]))
    assert tok.batch_decode(np.array([[3, 4], [5, 6]])) == [tok.decode([3, 4]), tok.decode([5, 6])]
    refused(r"do not pass a second sequence when the ids already contain special tokens", tok.get_special_tokens_mask,
            [3, 4], [5], already_has_special_tokens=True)
    refused(r"pad\(\) needs a dict \(or list of dicts\) with an 'input_ids' entry", tok.pad, {"ids": [[1]]})
    refused(r"unrecognised keyword arguments \['colour'\]", tok.tokenize, "hello", colour="red")
    refused(r"truncation length \(7\) is not a multiple of pad_to_multiple_of \(4\)", tok, "a b c d e f g h i",
            truncation=True, max_length=7, padding="max_length", pad_to_multiple_of=4)
    refused(r"unknown special token attribute 'cls'; expected one of", GPT2Tokenizer,
            str(TOKENIZERS / "opt" / "vocab.json"), str(TOKENIZERS / "opt" / "merges.txt"), special_tokens={"cls": "x"})
    refused(r"bos_token: special token must be a string or a dict with a string 'content', got 5", GPT2Tokenizer,
            str(TOKENIZERS / "opt" / "vocab.json"), str(TOKENIZERS / "opt" / "merges.txt"), special_tokens={"bos_token": 5})
    (tmp_path / "vocab.json").write_text("[1, 2]")
    refused(r"vocab\.json must be a JSON object mapping token strings to integer ids", GPT2Tokenizer,
            str(tmp_path / "vocab.json"), str(TOKENIZERS / "opt" / "merges.txt"))
    refused(r"merges file not found: .*absent\.txt \(expected merges\.txt", GPT2Tokenizer,
            str(TOKENIZERS / "opt" / "vocab.json"), str(tmp_path / "absent.txt"))


def test_tokenizer_directory_checks(tmp_path):
    from refimpl.tokenizers import BertTokenizer, XGLMTokenizer

    refused(r"sentencepiece model not found: .*nothing\.model \(expected sentencepiece\.bpe\.model\)", XGLMTokenizer,
            vocab_file=str(tmp_path / "nothing.model"))
    refused(r"vocabulary file not found: .*vocab\.txt \(expected vocab\.txt, one token per line\)", BertTokenizer,
            str(tmp_path / "vocab.txt"))
    (tmp_path / "vocab.txt").write_text("")
    refused(r"vocab\.txt is empty; expected one WordPiece token per line", BertTokenizer, str(tmp_path / "vocab.txt"))


def test_cli_file_checks(tmp_path, capfd):
    from refimpl.cli import load_arrays, main

    (tmp_path / "inputs.txt").write_text("1 2 3")
    refused(r"--inputs .*inputs\.txt: expected a \.npz or \.safetensors file", load_arrays, str(tmp_path / "inputs.txt"),
            "--inputs")
    refused(r"--against .*absent\.npz is not a file \(expected a \.npz or \.safetensors file\)", load_arrays,
            str(tmp_path / "absent.npz"), "--against")
    (tmp_path / "in.txt").write_text("2 5\n\n")
    assert main(["generate", str(tmp_path / "in.txt"), "--format", "ids", "-o", str(tmp_path / "o"),
                 "--max-new-tokens", "1"]) == 3  # some lines got error records
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert rows[1] == {"index": 1, "error": "line 2: empty line"} and len(rows[0]["new_token_ids"]) == 1


def _safetensors(path, header, data):
    import struct

    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("offsets", [[8, 4], [0, 17], [-1, 8], [0, 8, 8]])
def test_safetensors_entry_offsets_are_checked(tmp_path, offsets):
    from refimpl.formats import CheckpointError
    from refimpl.formats.safetensors_file import read_safetensors

    file = _safetensors(tmp_path / "w.safetensors", {"w": {"dtype": "F32", "shape": [2], "data_offsets": offsets}},
                        bytes(16))
    refused(rf"tensor 'w' has bad data_offsets \[{', '.join(map(str, offsets))}\] \(expected \[begin, end\] with "
            r"begin <= end <= 16, the data size\)", read_safetensors, file, error=CheckpointError)


def test_safetensors_data_must_be_tiled_to_the_end(tmp_path):
    from refimpl.formats import CheckpointError
    from refimpl.formats.safetensors_file import read_safetensors

    file = _safetensors(tmp_path / "w.safetensors", {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                        bytes(12))
    refused(r"the header describes 8 bytes of tensor data, the file holds 12 \(truncated or padded file\)",
            read_safetensors, file, error=CheckpointError)
    file = _safetensors(tmp_path / "ok.safetensors", {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                        np.array([1.5, -2.0], "<f4").tobytes())
    np.testing.assert_array_equal(read_safetensors(file)["w"], [1.5, -2.0])


def test_sliding_window_stride_at_its_bound():
    from refimpl.scoring import sliding_token_logprobs, token_logprobs

    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    ids = np.arange(3, 20)
    got = sliding_token_logprobs(model, ids, window=8, stride=7)  # windows [0, 8), [7, 15), [14, 17)
    np.testing.assert_array_equal(got[:7], token_logprobs(model, ids[None, :8])[0])
    np.testing.assert_array_equal(got[7:14], token_logprobs(model, ids[None, 7:15])[0])
    np.testing.assert_array_equal(got[14:], token_logprobs(model, ids[None, 14:17])[0])


@pytest.mark.parametrize("dim", [0, 2, 3])
def test_xglm_sinusoid_needs_four_columns(dim):
    from refimpl.models.xglm import sinusoid_rows

    refused(rf"the sinusoidal position table needs d_model >= 4, got {dim}$", sinusoid_rows, np.arange(3), dim)
    # d_model = 4: half = 2, f = [1, 1/10000]; row r = [sin r, sin(r/1e4), cos r, cos(r/1e4)]
    r = np.arange(3, dtype=np.float64)
    expected = np.stack([np.sin(r), np.sin(r / 1e4), np.cos(r), np.cos(r / 1e4)], axis=1)
    np.testing.assert_allclose(sinusoid_rows(r.astype(int), 4, dtype=np.float64), expected, rtol=1e-12, atol=1e-15)


def test_led_classifier_needs_input_ids():
    model = refimpl.from_pretrained(GOLDEN / "led" / "window-6-LEDForSequenceClassification", dtype="float64")
    embeds = np.zeros((1, 4, model.config.d_model))
    refused(r"LEDForSequenceClassification needs input_ids", model, inputs_embeds=embeds,
            decoder_inputs_embeds=embeds)


def test_model_input_checks_name_the_values():
    from refimpl.models.led import shift_tokens_right

    mc = refimpl.from_pretrained(GOLDEN / "nezha" / "k2-NezhaForMultipleChoice", dtype="float64")
    refused(r"inputs_embeds must have shape \(batch, num_choices, sequence, hidden\), got \(1, 4, 12\)", mc,
            inputs_embeds=np.zeros((1, 4, 12)))
    led = refimpl.from_pretrained(GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration", dtype="float64")
    limit = led.config.max_decoder_position_embeddings
    refused(rf"{limit + 1} decoder positions exceed max_decoder_position_embeddings={limit}", led,
            input_ids=np.array([[0, 5, 6, 2]]), decoder_input_ids=np.full((1, limit + 1), 5))
    led(input_ids=np.array([[0, 5, 6, 2]]), decoder_input_ids=np.full((1, limit), 5))  # the bound itself
    cls = refimpl.from_pretrained(GOLDEN / "led" / "window-6-LEDForSequenceClassification", dtype="float64")
    refused(r"input_ids hold no <eos> token \(eos_token_id=2\) to pool at", cls, input_ids=np.array([[0, 5, 6, 7]]))
    refused(r"config\.pad_token_id has to be defined to shift tokens right", shift_tokens_right, np.array([[1, 2]]),
            None, 2)
    np.testing.assert_array_equal(shift_tokens_right(np.array([[7, -100, 9]]), 1, 2), [[2, 7, 1]])


def test_generate_argument_checks():
    from refimpl.generation import PhrasalConstraint

    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    ids = np.array([[2, 5, 6]])
    refused(r"past_key_values must be the tuple \(per layer\) of arrays a refimpl forward returns", model.generate,
            ids, past_key_values=[np.zeros(1)], max_new_tokens=1)
    refused(r"constraints must be refimpl\.generation constraints \(PhrasalConstraint, DisjunctiveConstraint\), "
            r"got \['PhrasalConstraint', 'str'\]", model.generate, ids, constraints=[PhrasalConstraint([5]), "x"],
            num_beams=2, max_new_tokens=2)
    led = refimpl.from_pretrained(GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration", dtype="float64")
    src = np.array([[0, 5, 6, 2], [0, 7, 8, 2]])
    refused(r"decoder_input_ids has 1 rows, input_ids 2", led.generate, src, decoder_input_ids=np.array([[2, 9]]),
            max_new_tokens=1)


def test_generate_decoder_prefix_without_start_token_gets_it_with_its_mask():
    """A decoder prefix whose rows do not start with decoder_start_token_id gets it prepended, and its mask a
    leading 1: the same tokens as a prefix that already starts with it."""
    led = refimpl.from_pretrained(GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration", dtype="float64")
    start = led.config.decoder_start_token_id
    src = np.array([[0, 5, 6, 2]])
    plain = led.generate(src, decoder_input_ids=np.array([[9, 11]]), decoder_attention_mask=np.array([[1, 1]]),
                         max_new_tokens=3)
    explicit = led.generate(src, decoder_input_ids=np.array([[start, 9, 11]]),
                            decoder_attention_mask=np.array([[1, 1, 1]]), max_new_tokens=3)
    np.testing.assert_array_equal(plain, explicit)
    assert plain[0, :3].tolist() == [start, 9, 11]


def test_contrastive_search_refuses_a_cache_and_processors_need_encoder_ids():
    from refimpl.generation.processors import _encoder_ids

    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    ids = np.array([[2, 5, 6]])
    past = model(input_ids=ids[:, :2], use_cache=True, return_dict=True).past_key_values
    refused(r"contrastive search cannot start from past_key_values \(upstream fails there too\)", model.generate,
            ids, past_key_values=past, penalty_alpha=0.6, top_k=3, max_new_tokens=2)
    refused(r"encoder_no_repeat_ngram_size needs the encoder input ids", _encoder_ids, None,
            "encoder_no_repeat_ngram_size")
    assert _encoder_ids([[1, 2]], "x").dtype == np.int64


def test_embedding_names_the_id_outside_the_table():
    from refimpl.ops import embedding

    table = np.arange(6.0).reshape(3, 2)
    refused(r"^position_ids holds id 5 outside the table of 3 rows \(valid ids are 0\.\.2\)$", embedding,
            np.array([0, 5]), table, "position_ids")
    refused(r"^input_ids holds id -1 outside the table of 3 rows", embedding, np.array([[2, -1]]), table)
    np.testing.assert_array_equal(embedding(np.array([2, 0]), table), [[4.0, 5.0], [0.0, 1.0]])


def test_a_wrong_cache_shape_is_named_with_the_expected_one():
    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    cfg = model.config
    H, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    good = np.zeros((1, H, 3, d))
    bad = np.zeros((1, H, 3, d + 1))
    past = tuple((good, good) for _ in range(cfg.num_hidden_layers - 1)) + ((good, bad),)
    i = cfg.num_hidden_layers - 1
    refused(rf"^past_key_values\[{i}\]\[1\] \(self-attention value\) must have shape \(batch=1, heads={H}, "
            rf"length=3, head_dim={d}\), got \(1, {H}, 3, {d + 1}\)$", model, input_ids=np.array([[5]]),
            past_key_values=past)
    past = ((bad, good),) + past[1:]  # the first array wrong: no length known yet
    refused(rf"^past_key_values\[0\]\[0\] \(self-attention key\) must have shape \(batch=1, heads={H}, length, "
            rf"head_dim={d}\), got \(1, {H}, 3, {d + 1}\)$", model, input_ids=np.array([[5]]), past_key_values=past)


def test_json_files_past_the_size_bound_are_refused_unread(tmp_path):
    from refimpl.formats import load_json

    big = tmp_path / "config.json"
    with open(big, "wb") as f:
        f.truncate(100_000_001)  # sparse: no disk used, and it must not be read
    refused(r"config\.json: config\.json is larger than 100000000 bytes; refusing to read it$", load_json, big,
            "config.json")


def test_resume_refuses_records_without_a_proper_index(tmp_path):
    from refimpl.batch.output import parse_record, resume_file

    for line, expected in ((b'{"index": 3}\n', (3, False)), (b'{"index": 0, "error": "x"}\n', (0, True)),
                           (b'{"index": -1}\n', (None, False)), (b'{"index": true}\n', (None, False)),
                           (b'{"index": "3"}\n', (None, False)), (b'[3]\n', (None, False)),
                           (b'\xff\n', (None, False)), (b'{"index": 2.0}\n', (None, False))):
        assert parse_record(line) == expected, line
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"index": 0}\n{"index": -2}\n')
    refused(r"--resume: line 2 of .*out\.jsonl is not a record of refimpl score", resume_file, str(out))
    out.write_bytes(b'{"index": 0}\n{"index": 1, "error": "e"}\n{"index": 2')
    assert resume_file(str(out)) == ({0, 1}, 1)
    assert out.read_bytes() == b'{"index": 0}\n{"index": 1, "error": "e"}\n'  # the cut line is removed


def test_torch_pickle_nesting_bound_is_exactly_64(tmp_path):
    """{t: 0} with t = n TUPLE1 wrappings of (): the dict nests n + 1 containers deep; 64 is allowed."""
    from hostile import nested_tuple_pickle, torch_zip

    from refimpl.formats import CheckpointError
    from refimpl.formats.torch_pickle import read_torch_file

    allowed = torch_zip(tmp_path / "63.bin", nested_tuple_pickle(63), {})
    refused(r"is not a tensor \(int\)", read_torch_file, allowed, error=CheckpointError)  # past the depth check
    deep = torch_zip(tmp_path / "64.bin", nested_tuple_pickle(64), {})
    refused(r"pickle nests containers more than 64 deep \(a state dict needs a handful; corrupt or hostile file\)$",
            read_torch_file, deep, error=CheckpointError)


def test_torch_pickle_refuses_out_of_band_buffers(tmp_path):
    import struct

    from hostile import torch_zip

    from refimpl.formats import CheckpointError
    from refimpl.formats.torch_pickle import read_torch_file

    data = b"\x80\x05\x96" + struct.pack("<Q", 3) + b"abc" + b"."  # BYTEARRAY8 of 3 bytes, STOP
    refused(r"refusing a pickle opcode torch state dicts do not use \(BYTEARRAY8 / out-of-band buffers\)$",
            read_torch_file, torch_zip(tmp_path / "b.bin", data, {}), error=CheckpointError)


def test_top_k_none_disables_top_k_and_negative_is_refused():
    model = refimpl.from_pretrained(OPT_LM, dtype="float64")
    ids = np.array([[2, 5, 6]])
    draws = []
    for top_k in (None, 0):  # both disable top-k: the same draws from the same generator
        draws.append(model.generate(ids, do_sample=True, top_k=top_k, max_new_tokens=4,
                                    generator=np.random.default_rng(7)))
    np.testing.assert_array_equal(draws[0], draws[1])
    refused(r"top_k .*got -1", model.generate, ids, do_sample=True, top_k=-1, max_new_tokens=2)
