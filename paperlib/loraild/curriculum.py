"""Loss weights ``(lambda_1, lambda_2, lambda_3)`` of eq. (4) per epoch (section 3.3, appendix B).

Curriculum (LoRAILD rows and the "Curriculum" RAIL-KD_c row): epochs ``e < s`` (``s`` =
``ild_start``, epochs counted from 0) train with ``(0.5, 0.5, 0)``; from ``s`` on the weights are

- ``sharp``: the final state at once;
- ``smooth``: ``(1 - k) * initial + k * final`` with ``k = min((e - s + 1) / (E - s), 1)``,
  ``E`` the number of epochs (the authors' definition);

final state ``"equal"`` = (1/3, 1/3, 1/3), or ``"no_kd"`` = (0.5, 0, 0.5) (RTE's extra variant).
Epochs before ``s`` are excluded from best-epoch selection.

Without curriculum: w/o KD (1, 0, 0); Vanilla KD (0.5, 0.5, 0) (eq. 1 with lambda = 0.5);
RAIL-KD_c / _l (1/3, 1/3, 1/3).
"""

from __future__ import annotations

from paperlib.loraild.config import MethodSpec

Weights = tuple[float, float, float]
INITIAL: Weights = (0.5, 0.5, 0.0)
FINAL: dict[str, Weights] = {"equal": (1 / 3, 1 / 3, 1 / 3), "no_kd": (0.5, 0.0, 0.5)}


def curriculum_weights(epoch: int, start: int, epochs: int, final: str = "equal",
                       mode: str = "sharp") -> Weights:
    """``(lambda_1, lambda_2, lambda_3)`` at ``epoch`` of a curriculum starting at ``start``."""
    if final not in FINAL:
        raise ValueError(f"final state is one of {sorted(FINAL)}, not {final!r}")
    if mode not in ("sharp", "smooth"):
        raise ValueError(f"curriculum mode is 'sharp' or 'smooth', not {mode!r}")
    if epoch < start:
        return INITIAL
    target = FINAL[final]
    if mode == "sharp":
        return target
    k = min((epoch - start + 1) / max(epochs - start, 1), 1.0)
    return tuple((1 - k) * a + k * b for a, b in zip(INITIAL, target))  # type: ignore[return-value]


def method_weights(method: MethodSpec, epoch: int, start: int, epochs: int, final: str = "equal",
                   mode: str = "sharp") -> Weights:
    """Loss weights of ``method`` at ``epoch``."""
    if method.curriculum:
        return curriculum_weights(epoch, start, epochs, final, mode)
    if not method.kd:
        return (1.0, 0.0, 0.0)
    if method.inter is None:
        return (0.5, 0.5, 0.0)
    return FINAL["equal"]


def selectable(method: MethodSpec, epoch: int, start: int) -> bool:
    """Whether ``epoch`` may be picked as the best epoch (curriculum: only from ``start`` on)."""
    return not method.curriculum or epoch >= start


__all__ = ["curriculum_weights", "method_weights", "selectable", "INITIAL", "FINAL"]
