"""Where paperlib's LoRAILD (paper B) differs from the paper's text or the authors' code.

The book's deviations page renders :data:`DEVIATIONS` as a table (see :mod:`paperlib.deviations`).
"""

from __future__ import annotations

from paperlib.deviations import Deviation

DEVIATIONS: list[Deviation] = [
    Deviation(
        topic="eq. 3: sum or mean over the batch",
        original="paper's text: L_ILD is a sum over inputs x; authors' code: a mean",
        ours="mean over the batch's real tokens (as the authors' code)",
        why="a sum makes the loss weight grow with the batch size and the sequence length, so the "
            "1/3 weights of eq. 4 would mean different things at different sizes",
        effect="a constant factor per batch; not measured",
        restore="none (scale lambda_3 by the token count to emulate the sum)",
    ),
    Deviation(
        topic="padding in L_ILD",
        original="authors' code: padded positions (to max_length 128) enter the mean of eq. 3",
        ours="padded positions are masked out of the mean",
        why="padding carries no input; its features differ between teacher and student only "
            "through position, and their share depends on how long the batch's sentences are",
        effect="not measured",
        restore="RunConfig(ild_mask_padding=False) (with pad_to_max_length=True for padding to 128)",
    ),
    Deviation(
        topic="padding in RAIL-KD pooling",
        original="authors' code: mean over all positions, padding included",
        ours="mean over real tokens",
        why="as for L_ILD: the pooled vector should describe the sentence, not its padding",
        effect="not measured",
        restore="RunConfig(ild_mask_padding=False)",
    ),
    Deviation(
        topic="KD temperature",
        original="authors' code: the temperature divides the probabilities after the softmax",
        ours="logits / T before the softmax (Hinton et al.)",
        why="the usual definition; dividing probabilities is not a temperature",
        effect="none at T = 1, the value used by the paper and here",
        restore="none needed at T = 1",
    ),
    Deviation(
        topic="seeds",
        original="authors' code: the seed is set after the models are built (LoRA and head "
                 "initialisation unseeded)",
        ours="the seed is set before any model is built",
        why="runs repeat exactly; a seed then fixes the whole run",
        effect="runs are reproducible; not compared with unseeded initialisation",
        restore="none",
    ),
    Deviation(
        topic="curriculum learning rate",
        original="authors' code: the curriculum learning rate is 'assigned' with == and so never applied",
        ours="RunConfig.curriculum_lr is applied from the curriculum's start epoch when given; default "
             "None keeps one learning rate, the authors' effective behaviour",
        why="the default reproduces what their code did; the parameter gives what it meant to do",
        effect="none at the default",
        restore="default (curriculum_lr=None)",
    ),
]
