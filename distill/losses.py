"""Pure loss functions for distillation; each documents its convention and has a closed-form test.

Registered in ``LOSSES`` so recipes and the CLI can name them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.core.registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("kl")
def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T²·KL(teacher ‖ student) on temperature-softened distributions, averaged over the batch.

    The T² factor (Hinton et al. 2015) keeps gradient magnitudes comparable across temperatures.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


@LOSSES.register("ce")
def hard_label_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the gold labels."""
    return F.cross_entropy(student_logits.float(), labels)


@LOSSES.register("mse")
def logits_mse(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of outputs (regression tasks: against labels or the teacher's scores)."""
    return F.mse_loss(student_logits.float().view(-1), target.float().view(-1))


@LOSSES.register("hidden_mse")
def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between (projected) student and teacher hidden states, over non-padding tokens only.

    Averaged over every element of the real tokens, so padding never changes the value.
    """
    diff = (student_hidden.float() - teacher_hidden.float()) ** 2
    if mask is None:
        return diff.mean()
    m = mask.to(diff.dtype).unsqueeze(-1)
    return (diff * m).sum() / (m.sum() * diff.shape[-1]).clamp_min(1.0)
