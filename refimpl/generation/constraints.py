"""Constraints for constrained beam search: transformers 4.37.2 `generation/beam_constraints.py`.

    PhrasalConstraint([5, 6])             the tokens 5, 6 must appear, in a row
    DisjunctiveConstraint([[5, 6], [7]])  one of the token sequences must appear

`generate(force_words_ids=[[5, 6], [[7], [8, 9]]])` builds the same two kinds from lists (a flat list is a
phrase, a list of lists a disjunction); `generate(constraints=[...])` takes these objects. Ported line by
line, including upstream's quirks, because they decide which beams survive: PhrasalConstraint.reset puts
`fulfilled_idx` at 0, not -1 (after a mismatch the phrase counts its first token as already matched), and a
stateful copy of a DisjunctiveConstraint shares its `current_seq` list with the original.
"""
from __future__ import annotations

from typing import List, Optional


def _is_token(token_id) -> bool:
    return isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0


class Constraint:
    """The interface constrained beam search uses (upstream's abstract Constraint)."""

    seqlen: int
    completed: bool

    def advance(self):  # -> the token(s) that would make progress, or None when complete
        raise NotImplementedError

    def does_advance(self, token_id: int) -> bool:
        raise NotImplementedError

    def update(self, token_id: int):  # -> (stepped, completed, reset)
        raise NotImplementedError

    def reset(self):
        raise NotImplementedError

    def remaining(self) -> int:
        raise NotImplementedError

    def copy(self, stateful=False):
        raise NotImplementedError


class PhrasalConstraint(Constraint):
    """A sequence of token ids that must appear, in order and contiguous."""

    def __init__(self, token_ids: List[int]):
        if not isinstance(token_ids, list) or len(token_ids) == 0:
            raise ValueError(f"`token_ids` has to be a non-empty list, but is {token_ids}.")
        if not all(_is_token(t) for t in token_ids):
            raise ValueError(f"Each list in `token_ids` has to be a list of positive integers, but is {token_ids}.")
        self.token_ids, self.seqlen = token_ids, len(token_ids)
        self.fulfilled_idx = -1  # the index of the last matched token
        self.completed = False

    def advance(self):
        return None if self.completed else self.token_ids[self.fulfilled_idx + 1]

    def does_advance(self, token_id: int) -> bool:
        return not self.completed and token_id == self.token_ids[self.fulfilled_idx + 1]

    def update(self, token_id: int):
        stepped = completed = reset = False
        if self.does_advance(token_id):
            self.fulfilled_idx += 1
            stepped = True
            completed = self.fulfilled_idx == self.seqlen - 1
            self.completed = completed
        else:
            reset = True
            self.reset()
        return stepped, completed, reset

    def reset(self):
        self.completed = False
        self.fulfilled_idx = 0  # upstream's value (not -1)

    def remaining(self) -> int:
        return self.seqlen - (self.fulfilled_idx + 1)

    def copy(self, stateful=False):
        new = PhrasalConstraint(self.token_ids)
        if stateful:
            new.fulfilled_idx, new.completed = self.fulfilled_idx, self.completed
        return new


class DisjunctiveTrie:
    """The token sequences of a DisjunctiveConstraint as a trie (nested dicts)."""

    def __init__(self, nested_token_ids: List[List[int]]):
        self.max_height = max(len(one) for one in nested_token_ids)
        root = {}
        for token_ids in nested_token_ids:
            level = root
            for token_id in token_ids:
                level = level.setdefault(token_id, {})
        if self.count_leaves(root) != len(nested_token_ids):
            raise ValueError("Each list in `nested_token_ids` can't be a complete subset of another list, but is"
                             f" {nested_token_ids}.")
        self.trie = root

    def next_tokens(self, current_seq) -> List[int]:
        node = self.trie
        for token in current_seq:
            node = node[token]
        return list(node.keys())

    def reached_leaf(self, current_seq) -> bool:
        return len(self.next_tokens(current_seq)) == 0

    def count_leaves(self, node) -> int:
        return 1 if not node else sum(self.count_leaves(child) for child in node.values())


class DisjunctiveConstraint(Constraint):
    """One of several token sequences must appear."""

    def __init__(self, nested_token_ids: List[List[int]]):
        if not isinstance(nested_token_ids, list) or len(nested_token_ids) == 0:
            raise ValueError(f"`nested_token_ids` has to be a non-empty list, but is {nested_token_ids}.")
        if any(not isinstance(token_ids, list) for token_ids in nested_token_ids):
            raise ValueError(f"`nested_token_ids` has to be a list of lists, but is {nested_token_ids}.")
        if not all(_is_token(t) for token_ids in nested_token_ids for t in token_ids):
            raise ValueError(f"Each list in `nested_token_ids` has to be a list of positive integers, but is "
                             f"{nested_token_ids}.")
        self.trie = DisjunctiveTrie(nested_token_ids)
        self.token_ids, self.seqlen = nested_token_ids, self.trie.max_height
        self.current_seq = []
        self.completed = False

    def advance(self):
        return self.trie.next_tokens(self.current_seq) or None

    def does_advance(self, token_id: int) -> bool:
        return token_id in self.trie.next_tokens(self.current_seq)

    def update(self, token_id: int):
        stepped = reset = False
        if self.does_advance(token_id):
            self.current_seq.append(token_id)
            stepped = True
        else:
            reset = True
            self.reset()
        self.completed = completed = self.trie.reached_leaf(self.current_seq)
        return stepped, completed, reset

    def reset(self):
        self.completed = False
        self.current_seq = []

    def remaining(self) -> int:
        return 0 if self.completed else self.seqlen - len(self.current_seq)

    def copy(self, stateful=False):
        new = DisjunctiveConstraint(self.token_ids)
        if stateful:
            new.current_seq, new.completed = self.current_seq, self.completed  # the same list, as upstream
        return new


class ConstraintListState:
    """The progress of one beam through all the constraints: complete, in progress (at most one), pending."""

    def __init__(self, constraints: List[Constraint]):
        self.constraints = constraints
        self.max_seqlen = max(c.seqlen for c in constraints)
        self.completed = False
        self.init_state()

    def init_state(self):
        self.complete_constraints = []
        self.inprogress_constraint = None
        self.pending_constraints = [c.copy(stateful=False) for c in self.constraints]

    def get_bank(self) -> int:  # the progress score beams are grouped by
        add = self.max_seqlen - self.inprogress_constraint.remaining() if self.inprogress_constraint else 0
        return len(self.complete_constraints) * self.max_seqlen + add

    def advance(self) -> Optional[List[int]]:  # the tokens that would make progress
        sources = self.pending_constraints if self.inprogress_constraint is None else [self.inprogress_constraint]
        tokens = []
        for constraint in sources:
            step = constraint.advance()
            if isinstance(step, int):
                tokens.append(step)
            elif isinstance(step, list):
                tokens.extend(step)
        return tokens or None

    def reset(self, token_ids: Optional[List[int]]):  # the state after reading these tokens from scratch
        self.init_state()
        for token in token_ids or ():
            self.add(token)
            if self.completed:
                break

    def add(self, token_id: int):  # -> (complete, stepped)
        if self.completed:
            return True, False
        complete = stepped = False
        if self.inprogress_constraint is not None:
            stepped, complete, reset = self.inprogress_constraint.update(token_id)
            if reset:
                self.pending_constraints.append(self.inprogress_constraint.copy(stateful=False))
                self.inprogress_constraint = None
            if complete:
                self.complete_constraints.append(self.inprogress_constraint)
                self.inprogress_constraint = None
                if len(self.pending_constraints) == 0:
                    self.completed = True
        else:
            for i, pending in enumerate(self.pending_constraints):
                if pending.does_advance(token_id):
                    stepped, complete, reset = pending.update(token_id)
                    if not stepped:
                        raise ValueError("constraint.update(token_id) made no progress although does_advance(token_id)")
                    if complete:
                        self.complete_constraints.append(pending)
                        self.inprogress_constraint = None
                    else:
                        self.inprogress_constraint = pending
                    self.pending_constraints = self.pending_constraints[:i] + self.pending_constraints[i + 1:]
                    if len(self.pending_constraints) == 0 and self.inprogress_constraint is None:
                        self.completed = True
                    break  # one token steps through one constraint at most
        return complete, stepped

    def copy(self, stateful=True):
        new = ConstraintListState(self.constraints)
        if stateful:
            new.complete_constraints = [c.copy(stateful=True) for c in self.complete_constraints]
            if self.inprogress_constraint is not None:
                new.inprogress_constraint = self.inprogress_constraint.copy(stateful=True)
            new.pending_constraints = [c.copy() for c in self.pending_constraints]
        return new


def from_force_words_ids(force_words_ids) -> List[Constraint]:
    """generate()'s `force_words_ids` -> constraints: a list of ints is a phrase, a list of lists a disjunction."""
    def refuse():
        raise ValueError("`force_words_ids` has to either be a `List[List[List[int]]]` or `List[List[int]]` of "
                         f"positive integers, but is {force_words_ids}.")
    if not isinstance(force_words_ids, list) or len(force_words_ids) == 0:
        refuse()
    constraints = []
    for word_ids in force_words_ids:
        if not isinstance(word_ids, list) or len(word_ids) == 0:
            refuse()
        if isinstance(word_ids[0], list):
            if any(not isinstance(t, list) or not all(_is_token(i) for i in t) for t in word_ids):
                refuse()
            constraints.append(DisjunctiveConstraint(word_ids))
        else:
            if not all(_is_token(t) for t in word_ids):
                refuse()
            constraints.append(PhrasalConstraint(word_ids))
    return constraints
