"""The trainable side of stage 2: the student, its loss terms and (for RAIL-KD) the projections.

:class:`DistillModel` computes eq. (4), ``L = l1 L_CE + l2 L_KD + l3 L_inter``, in ``forward`` so
that one ``accelerate``-prepared module holds every trainable weight (DDP needs the whole loss
computed inside its forward).  ``L_inter`` is ``L_ILD`` (eq. 3) for LoRAILD, the RAIL-KD loss for
the RAIL-KD rows, absent otherwise.  Terms whose weight is 0 are not computed.
"""

from __future__ import annotations

import torch
from torch import nn

from paperlib.loraild.config import MethodSpec, TaskSpec
from paperlib.loraild.features import LoraFeatureRecorder, align_teacher
from paperlib.loraild.fused_lora import FusedLoraRecorder
from paperlib.loraild.losses import RailKDHead, ce_loss, ild_loss_layers, kd_loss, pooled_layers
from paperlib.loraild.models import encoder_layers, forward_kwargs
from paperlib.loraild.teacher_cache import TeacherBatch


class TokenShare:
    """Data parallel: ``N * local tokens / global tokens`` (1.0 in one process or without a mask).

    ``ild_loss_layers`` is a mean over the real tokens of the *local* batch, and DDP averages the N
    processes' gradients with equal weights; shards hold different numbers of real tokens, so that
    would weight tokens differently from one process taking the whole global batch.  Scaling each
    process's mean by this factor makes the DDP average equal to the mean over the global batch's
    tokens (and the reported per-process values average to the single-process value).

    The global count's all-reduce starts when the batch arrives (the constructor, before the
    student's forward) and is waited for only where the factor is used (:meth:`get`): on NCCL the
    wait holds the device stream, not the host, so the processes meet there without stopping the
    forward that each still has queued.  Every process calls forward once per step, so the
    collectives line up.
    """

    def __init__(self, mask: torch.Tensor | None):
        self._work = None
        if mask is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        self._world = torch.distributed.get_world_size()
        if self._world == 1:
            return
        self._local = mask.detach().sum().to(torch.float64)
        self._total = self._local.clone()
        self._work = torch.distributed.all_reduce(self._total, async_op=True)

    def get(self) -> float | torch.Tensor:
        """The factor: 1.0, or a 0-d tensor (no wait for the device)."""
        if self._work is None:
            return 1.0
        self._work.wait()
        return (self._world * self._local / self._total.clamp_min(1.0)).float()


class DistillModel(nn.Module):
    """Student + loss of one method."""

    def __init__(self, student: nn.Module, method: MethodSpec, task: TaskSpec, n_teacher_layers: int,
                 teacher_hidden: int, rail_dim: int = 32, temperature: float = 1.0,
                 mask_padding: bool = True, fused_lora: bool = True, lora_kernel: str = "auto"):
        super().__init__()
        self.student = student
        self.method, self.task = method, task
        self.temperature, self.mask_padding = temperature, mask_padding
        self.n_student_layers = len(encoder_layers(student))
        self.n_teacher_layers = n_teacher_layers
        self.rail: RailKDHead | None = None
        if method.inter in ("rail_c", "rail_l"):
            self.rail = RailKDHead(method.inter[-1], teacher_hidden, student.config.hidden_size,
                                   n_teacher_layers, self.n_student_layers, rail_dim)
        # fused q/k/v LoRA records the features without extra kernels (fused_lora); hooks otherwise
        # (lora_kernel: how the fused LoRA computes its dropped-out features, FusedLoraRecorder's kernel)
        self.recorder = None
        if method.student_lora:
            self.recorder = FusedLoraRecorder(student, kernel=lora_kernel) if fused_lora else LoraFeatureRecorder(student)

    @property
    def needs_hidden(self) -> bool:
        return self.rail is not None

    @property
    def skips_parameters(self) -> bool:
        """Whether some trainable parameters get no gradient on some steps: RAIL-KD's projection
        heads, while the intermediate loss is off (curriculum epochs, weight 0).  Every other
        parameter (the student's, its LoRA adapters') is in every step's graph through the CE loss."""
        return self.rail is not None

    def student_forward(self, batch: dict[str, torch.Tensor], hidden: bool = False):
        return self.student(**forward_kwargs(self.student, batch), output_hidden_states=hidden)

    def forward(self, batch: dict[str, torch.Tensor], teacher: TeacherBatch | None,
                weights: tuple[float, float, float], groups: list[list[int]] | None = None,
                rail_selected: list[int] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Total loss, its detached parts (0-d tensors, read once per epoch) and the student logits."""
        l_ce_w, l_kd_w, l_inter_w = weights
        need_inter = l_inter_w > 0 and self.method.inter is not None
        mask = batch["attention_mask"] if self.mask_padding else None
        share = TokenShare(mask) if need_inter and self.method.inter == "lora_ild" else None
        out = self.student_forward(batch, hidden=need_inter and self.needs_hidden)
        logits = out.logits
        reg = self.task.regression
        lce = ce_loss(logits, batch["labels"], reg)
        loss = l_ce_w * lce
        parts = {"ce": lce.detach()}
        if l_kd_w > 0:
            assert teacher is not None, "KD needs teacher outputs"
            lkd = kd_loss(teacher.logits, logits, self.temperature, reg)
            loss = loss + l_kd_w * lkd
            parts["kd"] = lkd.detach()
        if need_inter:
            assert teacher is not None, "intermediate-layer losses need teacher outputs"
            if self.method.inter == "lora_ild":
                assert self.recorder is not None and teacher.lora is not None and groups is not None
                # [B, T, L, 3, r] views compared as they are: no flattening copies, float32 arithmetic
                s = self.recorder.stacked()
                t = align_teacher(teacher.lora[:, : s.shape[1]], groups)
                linter = ild_loss_layers(t, s, mask)
                factor = share.get()
                if not (isinstance(factor, float) and factor == 1.0):
                    linter = linter * factor
            else:
                assert self.rail is not None and teacher.pooled is not None and rail_selected is not None
                s_pooled = pooled_layers(out.hidden_states, mask)
                linter = self.rail(teacher.pooled.to(s_pooled.dtype), s_pooled, rail_selected)
            loss = loss + l_inter_w * linter
            parts["inter"] = linter.detach()
        if self.recorder is not None:
            self.recorder.clear()
        return loss, parts, logits


__all__ = ["DistillModel", "TokenShare"]
