"""generation/utils.py's output classes, fields in upstream's order, and the record every strategy fills."""
from __future__ import annotations

from ..outputs import output_class

_DECODER_ONLY = ("attentions", "hidden_states", "past_key_values")
_ENCODER_DECODER = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                    "decoder_hidden_states", "past_key_values")
_BEAM = ("sequences", "sequences_scores", "scores", "beam_indices")
GenerateDecoderOnlyOutput = output_class("GenerateDecoderOnlyOutput", "sequences", "scores", *_DECODER_ONLY)
GenerateBeamDecoderOnlyOutput = output_class("GenerateBeamDecoderOnlyOutput", *_BEAM, *_DECODER_ONLY)
GenerateEncoderDecoderOutput = output_class("GenerateEncoderDecoderOutput", "sequences", "scores", *_ENCODER_DECODER)
GenerateBeamEncoderDecoderOutput = output_class("GenerateBeamEncoderDecoderOutput", *_BEAM, *_ENCODER_DECODER)


def step_extras(out, is_encoder_decoder):  # -> (self attentions, cross attentions, hidden states) of one step
    if is_encoder_decoder:
        return out.decoder_attentions, out.cross_attentions, out.decoder_hidden_states
    return out.attentions, None, out.hidden_states


class Record:
    """What a strategy keeps per step for `return_dict_in_generate` (upstream's `scores`, `decoder_attentions`,
    `cross_attentions`, `decoder_hidden_states` tuples: one entry per generated token, each entry the
    model's per-layer tuple for that step), and the Generate*Output built from them at the end."""

    def __init__(self, cfg, is_encoder_decoder):
        self.cfg, self.is_encoder_decoder = cfg, is_encoder_decoder
        self.scores, self.attentions, self.cross, self.hidden = [], [], [], []

    def add(self, scores, out):  # scores [N, V] as the strategy reports them; out: the step's model output
        self.add_parts(scores, *step_extras(out, self.is_encoder_decoder))

    def add_parts(self, scores, attentions, cross, hidden):
        self.scores.append(scores)
        self.attentions.append(attentions), self.cross.append(cross), self.hidden.append(hidden)

    def output(self, decoder, sequences, beam=None, past_key_values="state"):
        """-> token ids [N, L] (no dict requested) or the Generate*Output. `beam`: (sequences_scores,
        beam_indices) for the beam strategies. The cache returned is the decoder's, unless given."""
        cfg = self.cfg
        if not cfg.return_dict_in_generate:
            return sequences
        attn, hidden, scores = cfg.output_attentions, cfg.output_hidden_states, cfg.output_scores
        fields = dict(sequences=sequences, scores=tuple(self.scores) if scores else None,
                      past_key_values=decoder.kwargs.get("past_key_values") if past_key_values == "state"
                      else past_key_values)
        if beam is not None:
            fields.update(sequences_scores=beam[0] if scores else None, beam_indices=beam[1] if scores else None)
        if self.is_encoder_decoder:
            encoder = decoder.kwargs.get("encoder_outputs")  # attentions/hidden states never expanded: [B, ...]
            fields.update(encoder_attentions=encoder.attentions if attn else None,
                          encoder_hidden_states=encoder.hidden_states if hidden else None,
                          decoder_attentions=tuple(self.attentions) if attn else None,
                          cross_attentions=tuple(self.cross) if attn else None,
                          decoder_hidden_states=tuple(self.hidden) if hidden else None)
            cls = GenerateBeamEncoderDecoderOutput if beam is not None else GenerateEncoderDecoderOutput
        else:
            fields.update(attentions=tuple(self.attentions) if attn else None,
                          hidden_states=tuple(self.hidden) if hidden else None)
            cls = GenerateBeamDecoderOnlyOutput if beam is not None else GenerateDecoderOnlyOutput
        return cls(**fields)
