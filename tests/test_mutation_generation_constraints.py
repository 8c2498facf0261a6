"""Constraints (refimpl/generation/constraints.py) against live upstream's beam_constraints.py, exhaustively over
short token sequences: every method's result after every prefix (advance, does_advance, update's
(stepped, completed, reset), remaining, completed, fulfilled state), stateful and fresh copies, the list state's
bank, completion and advance, and the constructors' refusals with upstream's messages.
"""
import itertools

import pytest

transformers = pytest.importorskip("transformers")
from transformers.generation import beam_constraints as upstream  # noqa: E402

from refimpl.generation import constraints as ours  # noqa: E402

TOKENS = range(5)
SPECS = [("phrase", [1]), ("phrase", [1, 2]), ("phrase", [2, 2, 3]), ("phrase", [1, 2, 1]),
         ("disjunctive", [[1], [2, 3]]), ("disjunctive", [[1, 2], [1, 3]]), ("disjunctive", [[0, 1, 2], [3]]),
         ("disjunctive", [[4]])]


def build(module, spec):
    kind, ids = spec
    cls = module.PhrasalConstraint if kind == "phrase" else module.DisjunctiveConstraint
    return cls([list(i) if isinstance(i, list) else i for i in ids])


def outcome(f, *args):  # a result, or the kind of error (upstream's quirks: a reset one-token phrase has no next token)
    try:
        return f(*args)
    except IndexError:
        return "IndexError"


def state(c):
    return (outcome(c.advance), c.remaining(), c.completed, [outcome(c.does_advance, t) for t in TOKENS])


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
def test_one_constraint_steps_as_upstreams(spec):
    for tokens in itertools.chain.from_iterable(itertools.product(TOKENS, repeat=n) for n in range(5)):
        a, b = build(upstream, spec), build(ours, spec)
        assert state(a) == state(b), (spec, tokens, "start")
        for i, t in enumerate(tokens):
            assert outcome(a.update, t) == outcome(b.update, t), (spec, tokens[:i + 1])
            assert state(a) == state(b), (spec, tokens[:i + 1])
            for stateful in (True, False):
                assert state(a.copy(stateful=stateful)) == state(b.copy(stateful=stateful)), (spec, tokens, stateful)
        a.reset(), b.reset()
        assert state(a) == state(b), (spec, tokens, "reset")


@pytest.mark.parametrize("specs", [SPECS[:2], [SPECS[1], SPECS[4]], [SPECS[2], SPECS[5], SPECS[7]], [SPECS[6]],
                                   [SPECS[3], SPECS[0]]], ids=str)
def test_constraint_list_state_steps_as_upstreams(specs):
    for tokens in itertools.chain.from_iterable(itertools.product(TOKENS, repeat=n) for n in range(6)):
        a = upstream.ConstraintListState([build(upstream, s) for s in specs])
        b = ours.ConstraintListState([build(ours, s) for s in specs])
        for i, t in enumerate(tokens):
            assert a.add(t) == b.add(t), (specs, tokens[:i + 1])
            for x, y in ((a, b), (a.copy(), b.copy()), (a.copy(stateful=False), b.copy(stateful=False))):
                assert (x.get_bank(), x.completed, x.advance()) == (y.get_bank(), y.completed, y.advance()), \
                    (specs, tokens[:i + 1])
        a.reset(list(tokens)), b.reset(list(tokens))
        assert (a.get_bank(), a.completed, a.advance()) == (b.get_bank(), b.completed, b.advance()), (specs, tokens)


@pytest.mark.parametrize("cls, bad", [
    ("PhrasalConstraint", []), ("PhrasalConstraint", (1, 2)), ("PhrasalConstraint", [1, -1]),
    ("PhrasalConstraint", [1, 2.0]), ("PhrasalConstraint", [-3]),
    ("DisjunctiveConstraint", []), ("DisjunctiveConstraint", ([1],)), ("DisjunctiveConstraint", [[1], 2]),
    ("DisjunctiveConstraint", [[1], [-2]]), ("DisjunctiveConstraint", [[1], [2, 1.5]]),
    ("DisjunctiveConstraint", [[1, 2], [1]]), ("DisjunctiveConstraint", [[1], [1, 2]]),
    ("DisjunctiveConstraint", [[1], [1]]),
])
def test_constructors_refuse_what_upstream_refuses_with_its_message(cls, bad):
    with pytest.raises(ValueError) as theirs:
        getattr(upstream, cls)(bad)
    with pytest.raises(ValueError) as mine:
        getattr(ours, cls)(bad)
    assert str(mine.value) == str(theirs.value)


def test_force_words_ids_become_phrases_and_disjunctions():
    made = ours.from_force_words_ids([[5, 6], [[7], [8, 9]], [0]])
    assert [type(c).__name__ for c in made] == ["PhrasalConstraint", "DisjunctiveConstraint", "PhrasalConstraint"]
    assert made[0].token_ids == [5, 6] and made[1].token_ids == [[7], [8, 9]] and made[2].token_ids == [0]
    message = r"`force_words_ids` has to either be a `List\[List\[List\[int\]\]\]` or `List\[List\[int\]\]` of " \
              r"positive integers, but is "
    for bad in ([], (1,), [[]], [5], [[1, -1]], [[[1], 2]], [[[1], [-2]]], [[1.0]], [[True]], "x"):
        with pytest.raises(ValueError, match=message + __import__("re").escape(str(bad))):
            ours.from_force_words_ids(bad)
