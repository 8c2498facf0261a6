"""Text generation for every decoder (OPT, XGLM, the LED decoder): greedy search, contrastive search, sampling,
beam search, beam sampling, group (diverse) beam search and constrained beam search, with upstream's logits
processors, reproducing transformers 4.37.2 `generation/utils.py` (GenerationMixin.generate and its
strategies), `generation/beam_search.py` (BeamSearchScorer, ConstrainedBeamSearchScorer, BeamHypotheses),
`generation/beam_constraints.py` and `generation/logits_process.py`.

    out = model.generate(input_ids, attention_mask=mask, num_beams=3, max_new_tokens=8)

Each step runs the model on the new token only, with the KV cache. A family declares its hooks in its
spec (refimpl/family.py `Generation`): `prepare_inputs(input_ids, **model_kwargs)`, upstream's
`prepare_inputs_for_generation` (XGLM builds position ids from the mask there), and, for encoder-decoder
models, `run_encoder(model, input_ids, **encoder_kwargs)`.
Sampling draws from a `numpy.random.Generator` (`generator=` or `seed=`): reproducible from its seed,
but not the same draws as torch's RNG. Every draw goes through one seam (search.draw): `generator=` may
also be any object with `draw(probs, num_samples)`, which is how the tests replay upstream's
torch.multinomial results and check the probabilities refimpl offers against upstream's.

The package, one file per idea:
    config.py      GenerationConfig
    processors.py  logits processors and warpers
    decoder.py     the decoding state (one cached model step at a time)
    search.py      greedy search and sampling (and the random draws)
    contrastive.py contrastive search
    beam.py        beam search and beam sampling
    group_beam.py  group (diverse) beam search
    constraints.py PhrasalConstraint, DisjunctiveConstraint (beam_constraints.py)
    constrained.py constrained beam search
    outputs.py     the Generate*Output classes and the per-step record
    generate.py    generate(): checks, input preparation, the choice of strategy
"""
from .beam import BeamHypotheses, BeamSearchScorer, beam_search
from .config import GenerationConfig, eos_list
from .constrained import ConstrainedBeamSearchScorer, constrained_beam_search
from .constraints import Constraint, ConstraintListState, DisjunctiveConstraint, PhrasalConstraint
from .contrastive import contrastive_search
from .decoder import Decoder
from .generate import generate
from .group_beam import group_beam_search
from .outputs import (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput, GenerateDecoderOnlyOutput,
                      GenerateEncoderDecoderOutput)
from .processors import (apply_all, bad_words, build_processors, build_warpers, forced_token, min_length,
                         no_repeat_ngram, repetition_penalty, temperature, top_k, top_p)
