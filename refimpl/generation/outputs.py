"""generation/utils.py's output classes, fields in upstream's order, and the helpers that fill them."""
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


def encoder_fields(decoder, cfg):
    enc = decoder.kwargs.get("encoder_outputs")
    if enc is None:
        return {}
    return {"encoder_attentions": enc.attentions if cfg.output_attentions else None,
            "encoder_hidden_states": enc.hidden_states if cfg.output_hidden_states else None}


def step_extras(out, is_encoder_decoder):  # -> (self attentions, cross attentions, hidden states)
    if is_encoder_decoder:
        return out.decoder_attentions, out.cross_attentions, out.decoder_hidden_states
    return out.attentions, None, out.hidden_states
