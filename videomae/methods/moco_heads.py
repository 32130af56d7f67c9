"""MoCo v3's networks around our ViT: the projection and prediction MLPs with BatchNorm synchronised across ranks,
the query model, the frozen random patch projection, and the momentum encoder's cosine schedule and update.

As the release (Chen, Xie, He 2021; ``moco/builder.py``, ``vits.py``): Linear layers without bias, BatchNorm + ReLU
after every hidden Linear, the projector's last BatchNorm without affine parameters, the predictor without a last
BatchNorm; all BatchNorms synchronised over the global batch (the release converts them to ``SyncBatchNorm``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from videomae.engine import dist

__all__ = [
    "GlobalBatchNorm1d",
    "MocoEncoder",
    "MocoV3Model",
    "build_mlp",
    "freeze_patch_embedding",
    "momentum_at",
    "update_momentum_encoder",
]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the global batch: in training the mean and variance are those of every rank's rows together
    (one differentiable all-gather of each rank's count, mean and variance, combined exactly: the gather of
    :func:`videomae.engine.dist.gather_rows_with_grad`), so each rank
    normalises as one process would on the whole batch, gradients included. ``torch.nn.SyncBatchNorm`` does this
    on accelerators only (``expected input tensor to be on GPU``); this one runs wherever the process group does.
    Statistics and normalisation are computed in fp32 whatever the dtypes of the input and of the parameters (a
    bf16 engine module, or the fp32 momentum encoder under autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.training:
            mean, var, total = self._batch_stats(xf)
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    unbiased = var * (total / (total - 1))
                    self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                    self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean.float(), self.running_var.float()
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.float() + self.bias.float()
        return y.to(x.dtype)

    @staticmethod
    def _batch_stats(xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and biased variance ``[C]`` of the rows of every rank, and their count."""
        count = torch.full((1,), float(xf.shape[0]), device=xf.device)
        mean, var = xf.mean(0), xf.var(0, unbiased=False)
        if dist.world_size() == 1:
            return mean, var, count[0]
        stats = dist.gather_rows_with_grad(torch.cat([count, mean, var]).unsqueeze(0))  # (world, 1 + 2C)
        c = xf.shape[1]
        counts, means, variances = stats[:, :1], stats[:, 1 : 1 + c], stats[:, 1 + c :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total  # (C,)
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total  # biased, as the normalisation uses
        return mean, var, total


def build_mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """``num_layers`` bias-free Linears with synchronised BatchNorm + ReLU between them; ``last_bn`` adds a
    BatchNorm without affine parameters after the last Linear (the projector's)."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        dim_in = in_dim if i == 0 else hidden_dim
        dim_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(dim_in, dim_out, bias=False))
        if i < num_layers - 1:
            layers += [GlobalBatchNorm1d(dim_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(GlobalBatchNorm1d(dim_out, affine=False))
    return nn.Sequential(*layers)


class MocoEncoder(nn.Module):
    """A ViT classifier built with ``num_classes=0`` (its pooled feature is its output: the class token of image
    ViTs, the mean of the tokens for video ViTs) followed by the 3-layer projection MLP.

    Args:
        backbone: the registered classifier with an identity head.
        mlp_dim: hidden width of the MLPs (release: 4096).
        proj_dim: output width (release: 256).
    """

    def __init__(self, backbone: nn.Module, mlp_dim: int, proj_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = build_mlp(3, backbone.embed_dim, mlp_dim, proj_dim, last_bn=True)

    def forward(self, views: torch.Tensor, num_views: int = 2) -> torch.Tensor:
        """``[V*B, C, T, H, W]`` (view-major: all of view 0, then view 1) -> ``[V*B, proj_dim]``; the backbone
        sees the views together, each BatchNorm one view at a time (as the release's separate forward passes)."""
        features = self.backbone(views)  # (V*B, D)
        return torch.cat([self.projector(f) for f in features.chunk(num_views)])


class MocoV3Model(nn.Module):
    """The query side of MoCo v3 (what DeepSpeed trains): encoder + 2-layer prediction MLP.

    Args:
        backbone: the registered classifier with an identity head.
        mlp_dim: hidden width of the MLPs.
        proj_dim: width of projections and predictions.
    """

    def __init__(self, backbone: nn.Module, mlp_dim: int, proj_dim: int) -> None:
        super().__init__()
        self.encoder = MocoEncoder(backbone, mlp_dim, proj_dim)
        self.predictor = build_mlp(2, proj_dim, mlp_dim, proj_dim, last_bn=False)

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    def forward(self, views: torch.Tensor, num_views: int = 2) -> torch.Tensor:
        """``[V*B, C, T, H, W]`` view-major -> queries ``[V*B, proj_dim]``."""
        projections = self.encoder(views, num_views)  # (V*B, proj_dim)
        return torch.cat([self.predictor(p) for p in projections.chunk(num_views)])


def freeze_patch_embedding(backbone: nn.Module) -> None:
    """The frozen random patch projection (the paper's stability trick): re-draw the patch embedding as the release
    does, Xavier-uniform over its fan-in ``C * tubelet * p * p`` and fan-out ``embed_dim`` (as a Linear, not a
    conv) with a zero bias, and take it out of training (``requires_grad=False``, so no optimizer group holds it)."""
    proj = backbone.patch_embed.proj
    fan_in = math.prod(proj.weight.shape[1:])
    bound = math.sqrt(6.0 / (fan_in + proj.weight.shape[0]))
    with torch.no_grad():
        nn.init.uniform_(proj.weight, -bound, bound)
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
    for param in proj.parameters():
        param.requires_grad_(False)


def momentum_at(step: int, total_steps: int, base: float, cosine: bool = True) -> float:
    """The momentum of the key encoder's update before step ``step`` (0-based) of ``total_steps``: the release's
    ``1 - (1 - m0) * (cos(pi * step / total) + 1) / 2``, rising from ``m0`` to 1; ``cosine=False``: ``m0``."""
    if not cosine:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1.0) / 2.0


@torch.no_grad()
def update_momentum_encoder(momentum_encoder: nn.Module, encoder: nn.Module, m: float) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every trained parameter (a frozen one, e.g. the patch
    projection, is the same on both sides and stays untouched); the query side may be in a lower precision."""
    both = zip(momentum_encoder.parameters(), encoder.parameters(), strict=True)
    pairs = [(k, q) for k, q in both if q.requires_grad]
    if pairs:
        keys = [k for k, _ in pairs]
        torch._foreach_lerp_(keys, [q.detach().to(k.dtype) for k, q in pairs], 1.0 - m)
