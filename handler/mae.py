"""A ViT masked autoencoder (He et al., CVPR 2022) sized by arguments, as used by SAME.

Images go in and come out in model space, (N, C, H, W) with values in [-1, 1].
`forward(x, mask_ratio)` masks a random `mask_ratio` of the patches per sample (0.75 to train,
0 to score: every patch visible) and returns the full reconstruction and the patch mask.
"""
from dataclasses import asdict, dataclass
from typing import Tuple

import torch
from torch import nn


@dataclass(frozen=True)
class MAEConfig:
    """Shape of the autoencoder; stored next to its weights so the handler can rebuild it."""

    img_size: int = 28
    in_chans: int = 1
    patch_size: int = 4
    dim: int = 128
    enc_depth: int = 6
    enc_heads: int = 4
    dec_depth: int = 2
    dec_heads: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("enc_heads", "dec_heads"):
            if self.dim % getattr(self, name):
                raise ValueError(f"dim {self.dim} is not divisible by {name}={getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block (timm's ViT Block with qkv_bias=False)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MaskedAutoencoder(nn.Module):
    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = c = config
        self.grid = c.img_size // c.patch_size
        self.num_patches = self.grid * self.grid
        # ---- encoder
        self.patchify = nn.Conv2d(c.in_chans, c.dim, c.patch_size, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.enc_pos = nn.Parameter(torch.zeros(1, self.num_patches + 1, c.dim))
        self.encoder = nn.Sequential(*[Block(c.dim, c.enc_heads, c.mlp_ratio) for _ in range(c.enc_depth)])
        self.enc_norm = nn.LayerNorm(c.dim)
        # ---- decoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, self.num_patches + 1, c.dim))
        self.decoder = nn.Sequential(*[Block(c.dim, c.dec_heads, c.mlp_ratio) for _ in range(c.dec_depth)])
        self.dec_norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.in_chans * c.patch_size ** 2)
        for p in (self.cls_token, self.enc_pos, self.mask_token, self.dec_pos):
            nn.init.trunc_normal_(p, std=0.02)

    def random_masking(self, tokens: torch.Tensor, mask_ratio: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random (1 - mask_ratio) of the tokens (N, L, D) of each sample.

        Returns the kept tokens (N, L_keep, D), the mask (N, L) with 1 = removed, 0 = kept,
        and the indices that restore the original order.
        """
        n, length, dim = tokens.shape
        keep = int(length * (1 - mask_ratio))
        noise = torch.rand(n, length, device=tokens.device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        kept = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, dim))
        mask = torch.ones(n, length, device=tokens.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, restore), restore

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float):
        tokens = self.patchify(x).flatten(2).transpose(1, 2) + self.enc_pos[:, 1:]
        if mask_ratio > 0:
            tokens, mask, restore = self.random_masking(tokens, mask_ratio)
        else:  # scoring path: every patch visible, nothing to shuffle
            mask = torch.zeros(tokens.shape[:2], device=x.device)
            restore = None
        cls = (self.cls_token + self.enc_pos[:, :1]).expand(tokens.shape[0], -1, -1)
        latent = self.enc_norm(self.encoder(torch.cat([cls, tokens], dim=1)))
        return latent, mask, restore

    def forward_decoder(self, latent: torch.Tensor, restore) -> torch.Tensor:
        n, kept_plus_cls, dim = latent.shape
        tokens = latent[:, 1:]
        if restore is not None:
            fill = self.mask_token.expand(n, self.num_patches - tokens.shape[1], -1)
            tokens = torch.gather(torch.cat([tokens, fill], dim=1), 1, restore[:, :, None].expand(-1, -1, dim))
        tokens = torch.cat([latent[:, :1], tokens], dim=1) + self.dec_pos
        patches = self.head(self.dec_norm(self.decoder(tokens)))[:, 1:]  # (N, L, C*p*p)
        return self.unpatchify(patches)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, L, C*p*p) -> (N, C, H, W)."""
        c, p, g = self.config.in_chans, self.config.patch_size, self.grid
        x = patches.reshape(-1, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(-1, c, g * p, g * p)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.75) -> Tuple[torch.Tensor, torch.Tensor]:
        """x: (N, C, H, W) in [-1, 1] -> (reconstruction (N, C, H, W), mask (N, L), 1 = removed)."""
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        latent, mask, restore = self.forward_encoder(x, mask_ratio)
        return self.forward_decoder(latent, restore), mask
