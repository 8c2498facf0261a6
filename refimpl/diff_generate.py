"""Does another implementation's generated text part ways with refimpl's, and is it more than float32 noise?

    from refimpl.diff_generate import diff_generate
    report = diff_generate(model, {"input_ids": ids, "attention_mask": mask}, their_tokens, max_new_tokens=20)
    report.verdict, report.step, report.margin, report.noise   # "agree" | "tie" | "divergence", ...

`their_tokens` [N, S + L] is the candidate's output as upstream's generate() returns it: the prompt (with its
left padding) and the L new tokens for a decoder-only model (OPT, XGLM); the decoder start token and the new
tokens for an encoder-decoder model (LED).

Greedy search (the core). refimpl replays the candidate's tokens as a forced prefix, one cached step at a
time exactly as generate() runs, in its reference dtype (float64 by default) and in the other dtype, and
applies the logits processors the generation arguments imply. At each step where the candidate's token c is
not refimpl's choice k = argmax(scores):

    margin = scores[k] - scores[c]                   (the top-2 margin when c is refimpl's runner-up)
    noise  = max(SAFETY * 2 * max_v |s32[v] - s64[v]|,  FLOOR_ULPS * eps32 * max_v |s64[v]|)

The first term is refimpl's own float32 error at that step (its float32 and float64 scores of every token
v with a finite score, after the processors), doubled because the margin is a difference of two scores,
times a safety factor for an implementation that rounds differently; the second is a floor of a few
float32 ulps of the scores' scale, for a step where refimpl's float32 error happens to be tiny. Since the
largest per-token error bounds the error of the margin, a candidate that rounds like refimpl's own float32
run is always within noise. `tie` (margin <= noise): float32 rounding may decide the step, the candidate is
not shown wrong; later steps are still checked (the replay goes on with the candidate's token), and a later
divergence decides the row. `divergence`: the first step past noise. A token refimpl's processors forbid
(score -inf: a banned n-gram, eos before min_new_tokens) is a divergence of infinite margin.

End of sequence, as generate() handles it: once a row has produced an eos token it receives only
pad_token_id (anything else is a divergence); generation ends when every row has ended or at max_new_tokens.
Columns of pad after every row has ended are accepted (some implementations pad to a fixed length). A row
that stops before max_new_tokens without an eos is a divergence at the step where it stopped.

Sampling (do_sample=True, num_beams=1): which token was drawn depends on the candidate's random numbers and
is not judged; what is checked is that every token has a non-zero probability under refimpl's processors and
warpers (top_k, top_p, ...). Verdict `possible` when it has; `divergence` when the warpers remove the token
in both of refimpl's dtypes; `tie` when only one of them does (the token sits on the warpers' cut).

Beam search (num_beams > 1): the candidate's final sequences are compared with refimpl's beam search, run in
both dtypes: `agree` when they equal refimpl's reference run, `tie` when they equal refimpl's other-dtype run
(float32 rounding alone changes the result). Otherwise refimpl cannot judge from the final sequences alone:
a near-tie when the beams were pruned, which float32 rounding decides, changes which beams survive and can
end in a sequence of a clearly different score, and the pruned beams are not in the output. That case raises
`Undecidable` naming the row and step (check the model with greedy decoding instead). Beam sampling, group
beam search, constrained beam search and contrastive search raise NotImplementedError.

The verdict of the batch is the worst of its rows' (divergence > tie > possible > agree); `step` is the new
token (from 0) it is about, `first_difference` the first new token of that row refimpl would not choose.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np

from .generation.config import eos_list, position_limit
from .generation.generate import generate, prepare
from .generation.processors import apply_all, build_warpers
from .generation.search import Unfinished

SAFETY = 4.0     # how many of refimpl's own float32 errors another float32 implementation may show
FLOOR_ULPS = 8   # the noise is at least this many float32 ulps of the scores' scale
EPS32 = float(np.finfo(np.float32).eps)

RANK = {"agree": 0, "possible": 1, "tie": 2, "divergence": 3}  # the batch's verdict is its worst row's
EXIT_CODES = {"agree": 0, "possible": 0, "tie": 0, "divergence": 1}


class Undecidable(ValueError):
    """The candidate's output differs from refimpl's, and refimpl cannot tell a bug from float32 noise."""


@dataclass
class RowVerdict:
    row: int
    verdict: str                       # agree | possible | tie | divergence
    step: Optional[int] = None         # the new token (from 0) the verdict is about; None when they agree
    margin: Optional[float] = None     # refimpl's score of its choice minus that of the candidate's token
    noise: Optional[float] = None      # the float32 noise of that margin (see the module's docstring)
    candidate_token: Optional[int] = None
    refimpl_token: Optional[int] = None
    reason: str = ""
    ties: List[int] = field(default_factory=list)  # the steps within noise passed on the way


@dataclass
class GenerationDiff:
    verdict: str
    step: Optional[int]
    margin: Optional[float]
    noise: Optional[float]
    row: Optional[int]                 # the row the verdict is about (the earliest of the worst)
    strategy: str                      # greedy | sampling | beam search
    rows: List[RowVerdict]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def first_difference(self) -> Optional[int]:
        """The first new token of the verdict's row that is not refimpl's choice (an earlier tie, or `step`)."""
        if self.row is None:
            return None
        row = self.rows[self.row]
        return min(row.ties[:1] + ([row.step] if row.step is not None else []), default=None)

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "step": self.step, "margin": _number(self.margin),
                "noise": _number(self.noise), "row": self.row, "first_difference": self.first_difference,
                "strategy": self.strategy,
                "rows": [{k: _number(v) for k, v in asdict(r).items()} for r in self.rows]}

    def text(self) -> str:
        lines = [f"{'row':>4} {'verdict':<11} {'step':>5} {'margin':>10} {'noise':>10}  tokens (candidate / refimpl)"]
        for r in self.rows:
            tokens = "" if r.candidate_token is None else f"{r.candidate_token} / {r.refimpl_token}"
            lines.append(f"{r.row:>4} {r.verdict:<11} {_show(r.step):>5} {_show(r.margin):>10} {_show(r.noise):>10}"
                         f"  {tokens}{'  ' + r.reason if r.reason else ''}")
        head = {"agree": "every token is refimpl's choice",
                "possible": "every sampled token has non-zero probability under refimpl (the draws are not judged)",
                "tie": "differences only where the margin is within float32 noise",
                "divergence": f"row {self.row} diverges at new token {self.step}, beyond float32 noise"}
        lines.append(f"{self.strategy}: {self.verdict}: {head[self.verdict]}")
        return "\n".join(lines)


def _number(value):  # JSON has no infinity: an infinite margin is written as a string
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return value


def _show(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if isinstance(value, float) else str(value)


def in_dtype(model, dtype):
    """The same model with its weights cast to `dtype` (the noise run)."""
    from .modeling import Model

    params = {name: np.asarray(value, dtype=dtype) for name, value in model.params.items()}
    return Model(model.config, params, model.architecture, dtype, source=model.source)


def diff_generate(model, inputs: dict, tokens, noise_model=None, **generate_kwargs) -> GenerationDiff:
    """Judge the candidate's generated `tokens` [N, S + L] against refimpl's decoding of `inputs` (upstream's
    generate() arguments by name: input_ids, attention_mask, LED's global_attention_mask, ...) under the
    generation options `generate_kwargs` (max_new_tokens, num_beams, do_sample, top_k, ...: generate()'s).
    The noise run uses `noise_model` (default: `model` cast to the other of float32 / float64)."""
    inputs = dict(inputs)
    if "input_ids" not in inputs:
        raise ValueError(f"inputs must hold input_ids (the prompt, [batch, length]); got {sorted(inputs)}")
    tokens = _tokens(tokens, model.config.vocab_size)
    if noise_model is None:
        noise_model = in_dtype(model, np.float64 if model.dtype == np.float32 else np.float32)
    options = {**inputs, **generate_kwargs}
    probe = prepare(model, **options)  # checks the request exactly as generate() does
    cfg = probe.cfg
    if cfg.constraints is not None or cfg.force_words_ids is not None:
        raise NotImplementedError("diff-generate cannot judge constrained beam search (constraints, force_words_ids)")
    if cfg.num_beams == 1 and not cfg.do_sample and cfg.penalty_alpha is not None and cfg.penalty_alpha > 0 \
            and cfg.top_k is not None and cfg.top_k > 1:
        raise NotImplementedError("diff-generate cannot judge contrastive search (penalty_alpha with top_k > 1)")
    if cfg.num_beams > 1:
        if cfg.do_sample:
            raise NotImplementedError("diff-generate cannot judge beam sampling (num_beams > 1 with do_sample): "
                                      "which beams are kept depends on the candidate's random numbers")
        if cfg.num_beam_groups > 1:
            raise NotImplementedError("diff-generate cannot judge group beam search (num_beam_groups > 1)")
        return _beam(model, noise_model, options, tokens, probe)
    return _replay(model, noise_model, options, tokens, probe)


def _tokens(tokens, vocab) -> np.ndarray:  # -> [N, W] int64, or a clear error
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be a 2-D array [rows, length] of token ids, got shape {tokens.shape}")
    if tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens must hold integer token ids, got dtype {tokens.dtype}")
    bad = np.argwhere((tokens < 0) | (tokens >= vocab))
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"tokens[{r}, {c}] = {tokens[r, c]} is outside the vocabulary [0, {vocab})")
    return tokens.astype(np.int64)


def _length_options(options, tokens, prefix_length):
    """Without max_new_tokens / max_length, the candidate's own length is taken as generate()'s limit."""
    if options.get("max_new_tokens") is None and options.get("max_length") is None:
        return {**options, "max_new_tokens": tokens.shape[1] - prefix_length}
    return options


def _check_prefix(tokens, prefix, model, rows):  # the candidate's output starts with what generate() starts from
    if tokens.shape[0] != rows:
        raise ValueError(f"tokens has {tokens.shape[0]} rows, expected {rows} (the batch of input_ids times "
                         f"num_return_sequences)")
    width = prefix.shape[1]
    if tokens.shape[1] <= width:
        raise ValueError(f"tokens has {tokens.shape[1]} columns: no new token after the {width}-token prefix")
    what = ("the decoder start token" if model.config.is_encoder_decoder
            else "the prompt (input_ids, with its padding), as upstream's generate() returns it")
    bad = np.argwhere(tokens[:, :width] != prefix)
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"tokens row {r} does not start with {what}: column {c} holds {tokens[r, c]}, "
                         f"expected {prefix[r, c]}")


class _Run:
    """One of refimpl's two replays (reference or noise dtype): the cached decoding state and its scores."""

    def __init__(self, model, options, rows, prep=None):
        self.prep = prep if prep is not None else prepare(model, **options)
        repeat = rows // self.prep.batch
        if repeat > 1:  # sampling with num_return_sequences: generate() expands every row
            self.prep.decoder.expand(repeat)
            self.prep.input_ids = np.repeat(self.prep.input_ids, repeat, axis=0)
        self.warpers = build_warpers(self.prep.cfg) if self.prep.cfg.do_sample else None

    def scores(self, input_ids):  # -> (processed scores [N, V], warped scores [N, V] or None) for the next token
        out = self.prep.decoder.step(input_ids, False, False)
        scores = apply_all(self.prep.processors, input_ids, out.logits[:, -1, :].copy())
        warped = None if self.warpers is None else apply_all(self.warpers, input_ids, scores.copy())
        return scores, warped


def _replay(model, noise_model, options, tokens, probe) -> GenerationDiff:
    """Greedy search and sampling: the candidate's tokens as a forced prefix, judged step by step."""
    sampling = bool(probe.cfg.do_sample)
    rows = tokens.shape[0]
    if rows % probe.batch:
        raise ValueError(f"tokens has {rows} rows, not a multiple of the batch of input_ids ({probe.batch})")
    if not sampling and rows != probe.batch:
        raise ValueError(f"tokens has {rows} rows, expected {probe.batch} (one per row of input_ids: greedy "
                         "search returns one sequence per input)")
    prefix_length = probe.input_ids.shape[1]
    given = options
    options = _length_options(options, tokens, prefix_length)
    reference = _Run(model, options, rows, prep=probe if options is given else None)
    noise = _Run(noise_model, options, rows)
    cfg = reference.prep.cfg
    _check_prefix(tokens, reference.prep.input_ids, model, rows)
    limit = position_limit(model.config)
    if limit is not None and tokens.shape[1] > limit:
        raise ValueError(f"tokens has {tokens.shape[1]} columns, beyond this model's position limit {limit}")
    max_new = cfg.max_length - prefix_length
    pad = cfg.pad_token_id
    verdicts = [RowVerdict(r, "possible" if sampling else "agree") for r in range(rows)]
    decided = np.zeros(rows, dtype=bool)  # a divergence was found: nothing more to judge in that row
    unfinished = Unfinished(cfg, rows)
    input_ids = reference.prep.input_ids
    new = tokens[:, prefix_length:]  # [N, L]
    for step in range(new.shape[1]):
        candidate = new[:, step]  # [N]
        live = unfinished.rows.astype(bool)
        for r in np.flatnonzero(~live & ~decided & (candidate != pad)):
            _decide(verdicts[r], step, candidate[r], pad, f"the row has ended (eos), so generate() pads it with "
                                                       f"pad_token_id {pad}")
            decided[r] = True
        if not live.any():
            continue  # generate() has stopped: what follows is accepted padding, checked above
        if step >= max_new:
            for r in np.flatnonzero(live & ~decided):
                _decide(verdicts[r], step, candidate[r], None, f"generated past max_new_tokens={max_new} "
                                                               "without an eos")
                decided[r] = True
            continue
        ref_scores, ref_warped = reference.scores(input_ids)
        noise_scores, noise_warped = noise.scores(input_ids)
        for r in np.flatnonzero(live & ~decided):
            if sampling:
                judged = _judge_sample(ref_warped[r], noise_warped[r], candidate[r])
            else:
                judged = _judge_greedy(ref_scores[r], noise_scores[r], candidate[r])
            if judged is not None:
                decided[r] = _record(verdicts[r], step, candidate[r], *judged)
        input_ids = unfinished.append(input_ids, candidate.copy())
    stopped = new.shape[1]
    if stopped < max_new:
        for r in np.flatnonzero(unfinished.rows.astype(bool) & ~decided):
            _decide(verdicts[r], stopped, None, None, f"stopped after {stopped} new tokens without an eos; "
                                                      f"generate() continues to max_new_tokens={max_new}")
    return _summary(verdicts, "sampling" if sampling else "greedy")


def _decide(verdict, step, candidate, refimpl_token, reason):  # a divergence that is not a matter of scores
    verdict.verdict, verdict.step, verdict.reason = "divergence", step, reason
    verdict.candidate_token = None if candidate is None else int(candidate)
    verdict.refimpl_token = refimpl_token
    verdict.margin, verdict.noise = float("inf"), None


def _record(verdict, step, candidate, kind, choice, margin, noise, reason) -> bool:
    """A step where the candidate's token is not refimpl's choice. -> True when it decides the row."""
    if kind == "tie":
        verdict.ties.append(step)
        if verdict.verdict in ("agree", "possible"):  # the first tie is reported until a divergence
            verdict.verdict, verdict.step, verdict.margin, verdict.noise = "tie", step, margin, noise
            verdict.candidate_token, verdict.refimpl_token, verdict.reason = int(candidate), choice, reason
        return False
    verdict.verdict, verdict.step, verdict.margin, verdict.noise = "divergence", step, margin, noise
    verdict.candidate_token, verdict.refimpl_token, verdict.reason = int(candidate), choice, reason
    return True


def score_noise(scores, other) -> float:  # [V], [V] -> the float32 noise of a difference of two scores
    """SAFETY * 2 * refimpl's largest float32-float64 score difference, at least FLOOR_ULPS float32 ulps of
    the scores' scale; tokens whose score is not finite in both runs (removed by a processor) are left out."""
    scores, other = np.asarray(scores, np.float64), np.asarray(other, np.float64)
    finite = np.isfinite(scores) & np.isfinite(other)
    if not finite.any():
        return 0.0
    error = float(np.max(np.abs(scores[finite] - other[finite])))
    scale = float(np.max(np.abs(scores[finite])))
    return max(SAFETY * 2 * error, FLOOR_ULPS * EPS32 * scale)


def _judge_greedy(scores, other, candidate):  # [V], [V], token -> None (refimpl's choice) or the judgement
    choice = int(np.argmax(scores))
    if candidate == choice:
        return None
    if not np.isfinite(scores[candidate]):
        return ("divergence", choice, float("inf"), None,
                "refimpl's logits processors forbid this token (its score is -inf)")
    margin = float(np.float64(scores[choice]) - np.float64(scores[candidate]))
    noise = score_noise(scores, other)
    if margin <= noise:
        return "tie", choice, margin, noise, "within float32 noise"
    return "divergence", choice, margin, noise, ""


def _judge_sample(warped, other_warped, candidate):  # the candidate's token must have non-zero probability
    if np.isfinite(warped[candidate]):
        return None
    choice = int(np.argmax(warped))
    if np.isfinite(other_warped[candidate]):
        return ("tie", choice, None, None, "removed by refimpl's warpers in one dtype only: on the cut, "
                                           "float32 rounding decides")
    return "divergence", choice, float("inf"), None, "zero probability under refimpl's logits processors and warpers"


def _beam(model, noise_model, options, tokens, probe) -> GenerationDiff:
    """Beam search: the final sequences against refimpl's, in both dtypes (see the module's docstring)."""
    batch = probe.batch
    if tokens.shape[0] % batch:
        raise ValueError(f"tokens has {tokens.shape[0]} rows, not a multiple of the batch of input_ids ({batch})")
    returned = tokens.shape[0] // batch
    prefix_length = probe.input_ids.shape[1]
    options = {**_length_options(options, tokens, prefix_length), "num_return_sequences": returned}
    _check_prefix(tokens, np.repeat(probe.input_ids, returned, axis=0), model, tokens.shape[0])
    input_ids = options.pop("input_ids")
    ours = generate(model, input_ids, **options)
    theirs_in_float32 = generate(noise_model, input_ids, **options)
    pad = probe.cfg.pad_token_id
    eos = eos_list(probe.cfg.eos_token_id)
    verdicts = []
    for r in range(tokens.shape[0]):
        candidate = _ended(tokens[r, prefix_length:], eos, pad)
        reference = _ended(ours[r, prefix_length:], eos, pad)
        if candidate == reference:
            verdicts.append(RowVerdict(r, "agree"))
            continue
        step = next((i for i, (a, b) in enumerate(zip(candidate, reference)) if a != b),
                    min(len(candidate), len(reference)))
        if candidate == _ended(theirs_in_float32[r, prefix_length:], eos, pad):
            verdicts.append(RowVerdict(r, "tie", step, reason="refimpl's own beam search in the other dtype ends "
                                                              "in the candidate's sequence"))
            continue
        raise Undecidable(
            f"beam search: row {r} differs from refimpl's beam search at new token {step} (candidate "
            f"{candidate[step:step + 5]}, refimpl {reference[step:step + 5]}), and refimpl's run in the other "
            "dtype does not end in the candidate's sequence either. From the final sequences alone refimpl cannot "
            "tell a bug from a near-tie when the beams were pruned (the pruned beams are not in the output): "
            "check the model with greedy decoding (num_beams=1)")
    return _summary(verdicts, "beam search")


def _ended(new_tokens, eos, pad) -> list:  # a row's new tokens up to and with its first eos; trailing pad dropped
    row = [int(t) for t in new_tokens]
    for i, t in enumerate(row):
        if t in eos:
            if any(x != pad for x in row[i + 1:]):
                return row  # tokens after eos that are not padding: kept, so they differ
            return row[:i + 1]
    while row and row[-1] == pad and pad not in eos:
        row.pop()
    return row


def _summary(verdicts, strategy) -> GenerationDiff:
    worst = max(verdicts, key=lambda v: (RANK[v.verdict], -(v.step if v.step is not None else 0), -v.row))
    return GenerationDiff(worst.verdict, worst.step, worst.margin, worst.noise,
                          None if worst.verdict in ("agree", "possible") else worst.row, strategy, verdicts)
