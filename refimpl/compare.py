"""Where does another implementation part ways with refimpl, and is it more than float32 noise?

    from refimpl.compare import compare, trace_model
    reference, noise = trace_model(model, inputs)           # refimpl float64 trace + its float32 noise
    report = compare(reference, their_dump, noise, attention_mask=inputs.get("attention_mask"))
    report.verdict, report.exit_code                        # "agree" 0 | "diverge" 1 | "incomplete" 3
    report.first_divergence                                 # the first module past its noise floor, or None

Errors are normwise, as in the golden tests: `max|candidate - reference| / max|reference|` over the
tensor. The noise floor of a tensor is refimpl's own float32-vs-float64 difference for that tensor on the
same inputs (the rounding a correct float32 implementation may show there; it grows with depth). A tensor
diverges when its error exceeds MARGIN times its noise floor, and at least FLOOR (a relative error below
FLOOR is float32 rounding wherever it stands). The first divergence, in the reference's execution order,
names the module where the other implementation goes wrong; what follows it inherits the error.

The verdict never claims more than was compared:
- Coverage. The expected modules are the reference's traced modules (internals, "<module>#<what>", are
  compared when the candidate has them but are never expected). "incomplete" (exit 3) when the final
  output (the root module "" unless `final` names another) was not compared, or fewer than half of the
  expected modules were -- whatever the compared ones say. Otherwise "diverge" (exit 1) when a tensor
  diverges, else "agree" (exit 0).
- Layout. A candidate whose shape is a permutation of the reference's is compared in the axis order
  that maps it onto the reference (`np.transpose(candidate, perm)`; reported as "transposed (1, 0, 2)").
  When several axis orders fit the shape (equal sizes), the one with the smallest error is taken and the
  note says so. When the shapes are equal the candidate is compared as it is (a note says when another
  axis order of the same shape would agree). Any other shape is a shape mismatch, which diverges: a
  reshape is never applied.
- Padding. With `attention_mask` ([B, T], 1 = attended; NEZHA's multiple choice [B, C, T] counts as
  B*C rows) every tensor's error is also split into its attended and padded elements. A position is
  padded when its row's mask is 0 there; the positions past T of a stack that pads its input (LED's
  encoder, to a multiple of its attention window) are padded too. In a tensor, the axes are found in
  the reference's layout (the candidate is transposed first), by their sizes:
      [B, T, ...]  hidden states, projections, per-position logits: the position axis T
      [T, B, ...]  LED's Longformer projections
      [B*T, ...]   rows of all positions (OPT's pre-LN feed-forward)
      [B, H, T, S] attention scores/probabilities (a 4-D tensor whose axis 1 is not T, e.g. NEZHA's
                   attention dropout): an element is padded when its query position T or its key
                   position S is (a padded key is masked out of every attended query's softmax,
                   so what a port puts there -- PyTorch's float32 minimum, TF's -1e8 -- never reaches an
                   attended position); LED's #local_probs [B, H, T, band]: the query only; #global_probs
                   [B, H, X, T]: the key only; a score the reference masks out (below MASKED: the
                   causal mask's future keys) counts with the padded elements too
      [B, T]       question answering's start logits (the root of a model with qa_outputs)
  and anything else -- pooled outputs [B, D], classification logits [B, L] (whatever their sizes),
  position embeddings [T, D], NEZHA's relative-position table [T, T, d] -- is compared whole (it has no
  padded position of its own). In an encoder-decoder model (LED) the decoder has its own length:
  decoder tensors follow `decoder_attention_mask` when it is given and are all attended otherwise; the
  encoder's tensors (and the cross-attention's keys and values, projected from the encoder's output)
  follow `attention_mask`. The cross-attention keys and values of a decoder-only model (XGLM's, NEZHA's
  as a decoder: from `encoder_hidden_states`) are compared whole.
  Under padding="lenient" (the default) a tensor diverges only when its attended elements do; one whose
  error beyond tolerance is confined to padded elements is reported with `padding_only` and the size of
  its padded error. Under padding="strict" the whole tensor counts. Each part's relative error is
  against its own max |reference|; the noise floor is the whole tensor's. Padding only ever excuses: a
  tensor within tolerance as a whole never diverges under "lenient" either.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np

from .trace import tracing

MARGIN = 10.0   # how many noise floors an error may reach before it is a divergence
FLOOR = 1e-6    # relative errors below this are never divergences (a few float32 roundings)
PADDING = ("lenient", "strict")
MASKED = -1e30  # an attention score below this was masked out (refimpl adds its dtype's minimum)
EXIT_CODES = {"agree": 0, "diverge": 1, "incomplete": 3}


@dataclass
class TensorReport:
    name: str                 # the upstream module name ("" is the root module)
    shape: tuple              # the reference's shape
    max_abs: float            # max |candidate - reference| over the whole tensor
    max_rel: float            # max_abs / max |reference|
    noise: Optional[float]    # the float32 noise floor (relative), when known
    diverges: bool
    note: str = ""            # e.g. "shape (3, 4), reference (2, 6)"
    layout: str = ""          # "" or "transposed (1, 0, 2)": the axis order the candidate was compared in
    max_abs_attended: Optional[float] = None  # with an attention mask: the error at attended elements
    max_rel_attended: Optional[float] = None  # (None: no mask, or no (batch, position) axes: compared whole)
    max_abs_padded: Optional[float] = None    # ... and at padded ones (0.0 when the tensor has none)
    max_rel_padded: Optional[float] = None
    padding_only: bool = False  # the error beyond tolerance is confined to padded elements


@dataclass
class Comparison:
    tensors: List[TensorReport]
    first_divergence: Optional[TensorReport]
    missing: Dict[str, List[str]] = field(default_factory=dict)  # names on one side only
    # {"compared", "expected", "fraction", "final_output", "final_output_compared"}
    coverage: dict = field(default_factory=dict)
    verdict: str = "incomplete"
    exit_code: int = EXIT_CODES["incomplete"]

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "coverage": self.coverage,
                "first_divergence": None if self.first_divergence is None else asdict(self.first_divergence),
                "tensors": [asdict(t) for t in self.tensors], "missing": self.missing}

    def summary(self) -> str:
        """The verdict in words, with what it rests on."""
        c = self.coverage
        final = c["final_output"] or "<root>"
        covered = (f"compared {c['compared']} of {c['expected']} traced modules ({100 * c['fraction']:.0f}%), "
                   f"final output {final} {'compared' if c['final_output_compared'] else 'NOT compared'}")
        padded = [t for t in self.tensors if t.padding_only and not t.diverges]
        if self.verdict == "incomplete":
            why = ("the final output was not compared" if not c["final_output_compared"] else
                   "fewer than half of the traced modules were compared")
            found = ("" if self.first_divergence is None else
                     f"; among what was compared, first divergence: {self.first_divergence.name or '<root>'}")
            text = f"verdict: incomplete (exit 3): {why}; nothing is claimed about the rest{found}"
        elif self.verdict == "diverge":
            text = f"verdict: diverge (exit 1): first divergence: {self.first_divergence.name or '<root>'}"
            if self.first_divergence.padding_only:
                text += " (at padded positions only: counted under padding 'strict')"
        else:
            text = "verdict: agree (exit 0): no divergence beyond noise"
        if padded:
            largest = max(t.max_rel_padded for t in padded)
            text += (f"\n{len(padded)} tensor(s) differ beyond noise only at padded positions (not counted under "
                     f"padding 'lenient'), the first {padded[0].name or '<root>'}, the largest {largest:.2e} relative")
        return f"{text}\ncoverage: {covered}"

    def table(self) -> str:
        """A readable report: one line per tensor, the first divergence marked, then what is missing and
        the verdict."""
        split = any(t.max_rel_attended is not None for t in self.tensors)
        lines = [f"{'module':<60} {'shape':<18} {'max abs':>10} {'max rel':>10} {'noise':>10}"
                 + (f" {'rel attend':>10} {'rel padded':>10}" if split else "")]
        for t in self.tensors:
            mark = "  <-- first divergence" if t is self.first_divergence else ("  diverges" if t.diverges else "")
            mark += "  padding only" if t.padding_only else ""
            cells = [_cell(t.max_abs), _cell(t.max_rel), _cell(t.noise)]
            cells += [_cell(t.max_rel_attended), _cell(t.max_rel_padded)] if split else []
            notes = "".join(f"  {x}" for x in (t.layout, t.note) if x)
            lines.append(f"{t.name or '<root>':<60} {str(t.shape):<18} {' '.join(cells)}{mark}{notes}")
        for side, names in self.missing.items():
            if names:
                lines.append(f"{len(names)} name(s) {side.replace('_', ' ')}: {', '.join(n or '<root>' for n in names)}")
        return "\n".join(lines + [self.summary()])


def _cell(value) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.2e}"


def relative_error(candidate: np.ndarray, reference: np.ndarray):  # -> (max abs, max rel), normwise
    c, r = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    nan_c, nan_r = np.isnan(c), np.isnan(r)
    if not np.array_equal(nan_c, nan_r):
        return float("inf"), float("inf")  # NaN where the other has a number
    diff = np.abs(np.where(nan_r, 0.0, c - r))
    if not np.isfinite(diff).all():
        diff = np.where(np.isfinite(diff), diff, np.where(c == r, 0.0, np.inf))
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(np.where(np.isfinite(r), r, 0.0)).max(initial=0.0))
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


def _numeric(value, name):  # -> a float64 ndarray, or a clear error naming the entry
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"candidate[{name!r}] is not a numeric array (got {type(value).__name__})") from None


# ---------------------------------------------------------------- layout: which axis order to compare in

def axis_orders(shape: tuple, reference_shape: tuple) -> List[tuple]:
    """Every permutation `perm` with np.transpose(candidate, perm).shape == reference_shape."""
    if len(shape) != len(reference_shape) or sorted(shape) != sorted(reference_shape):
        return []
    return [perm for perm in itertools.permutations(range(len(shape)))
            if all(shape[p] == n for p, n in zip(perm, reference_shape))]


# ---------------------------------------------------------------- padding: which elements are padded

@dataclass
class Rows:
    """One stack's positions: `padded` [R, L] (True where the mask is 0) and the stack's padded length
    (LED's encoder: L rounded up to its window; the positions past L are padded)."""
    padded: np.ndarray
    length: int

    def at(self, size: int) -> Optional[np.ndarray]:  # -> [R, size] padded positions, or None
        R, L = self.padded.shape
        if size == L:
            return self.padded
        if size == self.length > L:
            return np.concatenate([self.padded, np.ones((R, size - L), bool)], axis=1)
        return None


def mask_rows(mask, name: str) -> Rows:  # a 0/1 mask [B, T] (or [B, C, T]) -> Rows, or a clear error
    m = np.asarray(mask)
    if m.ndim not in (2, 3) or m.size == 0 or m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
        raise ValueError(f"{name} must be a [batch, length] array of 0/1 (1 = attended), got "
                         f"{m.dtype} of shape {m.shape}")
    m = m.reshape(-1, m.shape[-1])  # [R, L]: NEZHA's multiple choice runs B*C rows
    return Rows(m == 0, m.shape[1])


def padded_elements(shape: tuple, queries: Optional[Rows], keys: Optional[Rows] = None, kind: str = "",
                    per_position_2d: bool = False) -> Optional[np.ndarray]:
    """-> bool [shape], True at padded elements; None when the tensor has no (rows, positions) axes.
    `queries` gives the positions of the tensor's own length axis, `keys` those of an attention's key
    axis; `kind` is the internal's name ("probs", "local_probs", ...) or "" for a module output. A 2-D
    [B, N] tensor is pooled ([B, D], [B, labels]) unless `per_position_2d` (question answering's
    start logits [B, T]): its N is never taken for positions by its size alone."""
    rows = queries if queries is not None else keys
    if rows is None or len(shape) < 2:
        return None
    R = rows.padded.shape[0]
    if len(shape) == 4 and shape[0] == R and (kind or queries is None or queries.at(shape[1]) is None):
        axes = [] if kind == "global_probs" or queries is None else [(2, queries)]  # [B, H, T, S]
        axes += [] if kind == "local_probs" or keys is None else [(3, keys)]
        return _spread(shape, 0, axes)
    if queries is None:
        return None
    if len(shape) >= 3 or per_position_2d:
        for batch, position in ((0, 1), (1, 0)):        # [B, T, ...], then [T, B, ...]
            if shape[batch] == R and queries.at(shape[position]) is not None:
                return _spread(shape, batch, [(position, queries)])
    L = queries.padded.shape[1]
    if shape[0] == R * L:                               # [B*T, ...] rows
        flat = queries.padded.reshape((-1,) + (1,) * (len(shape) - 1))
        return np.broadcast_to(flat, shape)
    return None


def _spread(shape, batch: int, axes) -> Optional[np.ndarray]:  # OR of [R, n] position masks on (batch, axis)
    out = None
    for axis, rows in axes:
        positions = rows.at(shape[axis])
        if positions is None:
            continue
        view = [1] * len(shape)
        view[batch], view[axis] = shape[batch], shape[axis]
        part = (positions if batch < axis else positions.T).reshape(view)
        out = part if out is None else out | part
    return None if out is None else np.broadcast_to(out, shape)


class Padding:
    """Which rows (attention_mask, decoder_attention_mask) govern each traced tensor of one reference."""

    def __init__(self, reference: Mapping, attention_mask, decoder_attention_mask=None):
        self.main = mask_rows(attention_mask, "attention_mask")
        self.decoder = (None if decoder_attention_mask is None else
                        mask_rows(decoder_attention_mask, "decoder_attention_mask"))
        stacks = {s[i - 1] for s in map(_segments, reference) for i in range(1, len(s)) if s[i] in ("layers", "layer")}
        self.encoder_decoder = {"encoder", "decoder"} <= stacks  # LED: encoder.layers and decoder.layers
        self.question_answering = any(_segments(n)[-1] == "qa_outputs" for n in reference)  # root: [B, T]
        if self.encoder_decoder:  # the encoder's padded length: what its [B, T', D] tensors most often have
            R, L = self.main.padded.shape
            lengths = Counter(np.shape(v)[1] for n, v in reference.items() if self._side(n) == "encoder"
                              and "#" not in n and np.ndim(v) == 3 and np.shape(v)[0] == R and np.shape(v)[1] >= L)
            if lengths:
                self.main.length = lengths.most_common(1)[0][0]
        if not any(self.elements(n, np.shape(v)) is not None for n, v in reference.items()):
            raise ValueError(f"attention_mask of shape {np.shape(attention_mask)} fits no traced tensor's "
                             f"(batch, length) axes: is it the mask of the inputs the reference was traced on?")

    def _side(self, name: str) -> str:  # "encoder" | "decoder" | "main" | "external"
        s = _segments(name)
        cross_kv = _cross(s) and s[-1] in ("k_proj", "v_proj", "key", "value")
        if not self.encoder_decoder:
            return "external" if cross_kv else "main"
        return "encoder" if "encoder" in s or s[-1:] == ["shared"] or cross_kv else "decoder"

    def elements(self, name: str, shape: tuple) -> Optional[np.ndarray]:
        if name.endswith("relative_positions_encoding"):  # NEZHA's [T, T, d] table: no batch row
            return None
        rows = {"encoder": self.main, "main": self.main, "decoder": self.decoder, "external": None}
        kind = name.split("#")[1] if "#" in name else ""
        side = self._side(name)
        queries = rows[side]
        cross = _cross(_segments(name))
        keys = self.main if cross and self.encoder_decoder else None if cross else queries
        return padded_elements(shape, queries, keys, kind, per_position_2d=name == "" and self.question_answering)


def _segments(name: str) -> List[str]:
    return name.split("#")[0].split(".")


def _cross(segments: List[str]) -> bool:  # inside a cross-attention (BART-style or NEZHA's as a decoder)
    return "encoder_attn" in segments or "crossattention" in segments


# ---------------------------------------------------------------- one tensor, then the whole comparison

def _errors(candidate, reference, padded, masked=None) -> dict:  # (abs, rel) errors of the tensor's parts
    """"whole", "attended", "padded" (None when the tensor has no such part) and "unmasked": the whole
    tensor but the scores the reference masks out (their huge values would swamp its scale)."""
    whole = relative_error(candidate, reference)
    errors = {"whole": whole, "attended": None, "padded": None, "unmasked": whole}
    parts = [] if padded is None else [("attended", ~padded), ("padded", padded)]
    parts += [] if masked is None else [("unmasked", ~masked)]
    for key, where in parts:
        errors[key] = relative_error(candidate[where], reference[where]) if where.any() else None
    return errors


def _lenient(errors) -> float:  # the relative error a lenient verdict rests on: padding only ever excuses
    if errors["attended"] is None and errors["padded"] is None:  # no (batch, position) axes: the whole
        return errors["whole"][1]
    if errors["attended"] is None:                               # every element padded
        return 0.0
    return min(errors["attended"][1], 0.0 if errors["unmasked"] is None else errors["unmasked"][1])


def compare_tensor(name, reference, candidate, noise, tolerance, padding: Optional[Padding], strict: bool):
    """-> a TensorReport of one tensor (the candidate in the axis order that fits, split by padding)."""
    ref, cand = np.asarray(reference, np.float64), _numeric(candidate, name)
    orders = [None] if cand.shape == ref.shape else axis_orders(cand.shape, ref.shape)
    if not orders:
        same_size = " (same size: a reshape is never applied)" if cand.size == ref.size else ""
        return TensorReport(name, ref.shape, float("inf"), float("inf"), noise, True,
                            f"shape {cand.shape}, reference {ref.shape}{same_size}")
    padded = None if padding is None else padding.elements(name, ref.shape)
    masked = None
    if padded is not None and name.endswith("#scores"):  # a masked-out score's value is a convention
        masked = ref < MASKED
        padded = padded | masked

    def errors_in(perm):  # the candidate compared in axis order `perm` (None: as it is)
        return _errors(cand if perm is None else np.transpose(cand, perm), ref, padded, masked)

    def deciding(errors):
        return errors["whole"][1] if strict else _lenient(errors)

    perm, errors = min(((p, errors_in(p)) for p in orders), key=lambda pe: deciding(pe[1]))
    diverges = bool(deciding(errors) > tolerance)
    note = f"{len(orders)} axis orders fit the shape; {perm} has the smallest error" if len(orders) > 1 else ""
    if perm is None and diverges:  # equal shapes: would another axis order of the same shape agree?
        other = next((p for p in axis_orders(cand.shape, ref.shape)[1:] if deciding(errors_in(p)) <= tolerance), None)
        note = "" if other is None else f"would agree transposed {other} (an axis order of the same shape)"
    report = TensorReport(name, ref.shape, *errors["whole"], noise, diverges, note,
                          "" if perm is None else f"transposed {perm}")
    if padded is not None:  # a part without elements has no error (0.0)
        report.max_abs_attended, report.max_rel_attended = errors["attended"] or (0.0, 0.0)
        report.max_abs_padded, report.max_rel_padded = errors["padded"] or (0.0, 0.0)
        report.padding_only = bool(errors["whole"][1] > tolerance and _lenient(errors) <= tolerance)
    return report


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
            noise: Optional[Mapping[str, float]] = None, margin: float = MARGIN, floor: float = FLOOR, *,
            attention_mask=None, padding: str = "lenient", final: Optional[str] = None,
            decoder_attention_mask=None) -> Comparison:
    """Compare two {module name: array} dicts tensor by tensor, in the reference's order, and give the
    verdict with its coverage (see the module docstring for the rules)."""
    if padding not in PADDING:
        raise ValueError(f"padding must be one of {PADDING}, got {padding!r}")
    noise = noise or {}
    final = "" if final is None else final
    mask = None if attention_mask is None else Padding(reference, attention_mask, decoder_attention_mask)
    tensors = []
    for name, ref in reference.items():
        if name in candidate:
            tolerance = max(margin * noise.get(name, 0.0), floor)
            tensors.append(compare_tensor(name, ref, candidate[name], noise.get(name), tolerance, mask,
                                          padding == "strict"))
    first = next((t for t in tensors if t.diverges), None)
    expected = [n for n in reference if "#" not in n]
    compared = sum(1 for n in expected if n in candidate)
    coverage = {"compared": compared, "expected": len(expected),
                "fraction": compared / len(expected) if expected else 0.0,
                "final_output": final, "final_output_compared": final in reference and final in candidate}
    verdict = ("incomplete" if not coverage["final_output_compared"] or 2 * compared < len(expected) else
               "diverge" if first is not None else "agree")
    missing = {"only_in_reference": [n for n in expected if n not in candidate],
               "only_in_candidate": [n for n in candidate if n not in reference]}
    return Comparison(tensors, first, missing, coverage, verdict, EXIT_CODES[verdict])


def trace_model(model, inputs: Mapping, noise_model=None):  # -> (trace {name: array}, noise {name: relative})
    """Run `model` on `inputs` under a trace; with `noise_model` (the same checkpoint in the other dtype),
    also the float32-vs-float64 relative difference of every traced tensor."""
    with tracing() as trace:
        model(**inputs)
    if noise_model is None:
        return dict(trace), {}
    with tracing() as other:
        noise_model(**inputs)
    noise = {}
    for name, value in trace.items():
        if name in other and np.shape(other[name]) == np.shape(value):
            noise[name] = relative_error(other[name], value)[1]
    return dict(trace), noise
