"""Captum attributions for TorchServe's /explanations endpoint: which pixels drove the victim's answer.

captum is imported on first use only, so the handler loads without it.
"""
import torch


def integrated_gradients(forward, x01: torch.Tensor, target: int, n_steps: int = 16) -> torch.Tensor:
    """Integrated Gradients of `forward` (images in [0, 1] -> logits) from a black baseline."""
    from captum.attr import IntegratedGradients

    return IntegratedGradients(forward).attribute(x01, baselines=torch.zeros_like(x01), target=int(target),
                                                  n_steps=n_steps)
