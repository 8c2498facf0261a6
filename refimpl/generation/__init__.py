"""Text generation for every decoder (OPT, XGLM, the LED decoder): greedy search, beam search and
multinomial sampling, with upstream's logits processors, reproducing transformers 4.37.2
`generation/utils.py` (GenerationMixin.generate, greedy_search, sample, beam_search),
`generation/beam_search.py` (BeamSearchScorer, BeamHypotheses) and `generation/logits_process.py`.

    out = model.generate(input_ids, attention_mask=mask, num_beams=3, max_new_tokens=8)

Each step runs the model on the new token only, with the KV cache. A family declares its hooks in its
spec (refimpl/family.py `Generation`): `prepare_inputs(input_ids, **model_kwargs)`, upstream's
`prepare_inputs_for_generation` (XGLM builds position ids from the mask there), and, for encoder-decoder
models, `run_encoder(model, input_ids, **encoder_kwargs)`.
Sampling draws from a `numpy.random.Generator` (`generator=` or `seed=`): reproducible from its seed,
but not the same draws as torch's RNG.

The package, one file per idea:
    config.py      GenerationConfig
    processors.py  logits processors and warpers
    decoder.py     the decoding state (one cached model step at a time)
    search.py      greedy search and sampling
    beam.py        beam search
    outputs.py     the Generate*Output classes
    generate.py    generate(): checks, input preparation, the choice of strategy
"""
from .beam import BeamHypotheses, BeamSearchScorer, beam_search
from .config import GenerationConfig, eos_list
from .decoder import Decoder
from .generate import generate
from .outputs import (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput, GenerateDecoderOnlyOutput,
                      GenerateEncoderDecoderOutput)
from .processors import (apply_all, bad_words, build_processors, build_warpers, forced_token, min_length,
                         no_repeat_ngram, repetition_penalty, temperature, top_k, top_p)
