"""MS CLAP 2023's audio tower: HTS-AT (Swin transformer on the log-mel) with msclap's names.

Same modules and parameter names as ``msclap.models.htsat`` (``HTSATWrapper`` ->
``htsat`` -> ``HTSAT_Swin_Transformer``), so an msclap ``.pth`` loads with a strict key
check. Only the path msclap runs for its 7 s input at inference is implemented: the
log-mel (``frames <= 4 * spec_size``) is stretched to ``freq_ratio * spec_size`` frames
(bicubic, ``align_corners=True``), folded into a ``spec_size`` square, and the embedding
is the mean of the final tokens after ``norm`` (msclap's ``latent_output``). The
token-semantic head (``tscam_conv``, ``head``) only produces class scores and is kept for
the keys, not run.

Why not transformers' ``ClapAudioModel`` HTS-AT: its weights do not map one to one
(``attention.self.query/key/value`` vs msclap's fused ``attn.qkv``, other module names,
fusion layers msclap lacks) and it takes mel features from ``ClapFeatureExtractor``, whereas
msclap's front end (conv-STFT + Slaney mel of a 32 kHz filterbank) lives inside the tower.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from humanclap.scoring.msclap.frontend import LogmelFilterBank, Spectrogram, log_mel


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (training only), as timm/msclap."""
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep) * mask


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, w, w, C)."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, w, w, c)


def window_reverse(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    b = int(windows.shape[0] / (h * wd / w / w))
    x = windows.view(b, h // w, wd // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, wd, -1)


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, embed_dim: int, patch_stride: int):
        super().__init__()
        self.img_size = img_size
        pad = (patch_size - patch_stride) // 2
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_stride, padding=pad)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += window - 1
        rel[:, :, 1] += window - 1
        rel[:, :, 0] *= 2 * window - 1
        # a persistent buffer in msclap, so it is part of the checkpoint's keys
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinTransformerBlock(nn.Module):
    def __init__(
        self, dim: int, resolution: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float
    ):
        super().__init__()
        self.resolution = resolution
        if resolution <= window:  # the window covers the whole map: no partition, no shift
            window, shift = resolution, 0
        self.window, self.shift, self.drop_path = window, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", self._shift_mask() if shift > 0 else None)

    def _shift_mask(self) -> torch.Tensor:
        """-100 between tokens that the cyclic shift brought into one window from apart."""
        r, w, s = self.resolution, self.window, self.shift
        img = torch.zeros((1, r, r, 1))
        cnt = 0
        for h in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            for v in (slice(0, -w), slice(-w, -s), slice(-s, None)):
                img[:, h, v, :] = cnt
                cnt += 1
        win = window_partition(img, w).view(-1, w * w)
        mask = win.unsqueeze(1) - win.unsqueeze(2)
        return mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, w, s = self.resolution, self.window, self.shift
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, r, r, c)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        win = self.attn(window_partition(x, w).view(-1, w * w, c), self.attn_mask)
        x = window_reverse(win.view(-1, w, w, c), w, r, r)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + drop_path(x.view(b, r * r, c), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    def __init__(self, resolution: int, dim: int):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_paths: list[float],
        downsample: bool,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, drop_paths[i]
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class HTSATSwinTransformer(nn.Module):
    """msclap's ``HTSAT_Swin_Transformer`` (token-semantic variant), embedding path only."""

    def __init__(
        self,
        sampling_rate: int,
        window_size: int,
        hop_size: int,
        mel_bins: int,
        fmin: float,
        fmax: float,
        classes_num: int = 527,
        spec_size: int = 256,
        patch_size: int = 4,
        patch_stride: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (4, 8, 16, 32),
        window: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        self.spec_size, self.mel_bins = spec_size, mel_bins
        self.freq_ratio = spec_size // mel_bins
        self.spectrogram_extractor = Spectrogram(window_size, hop_size)
        self.logmel_extractor = LogmelFilterBank(sampling_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.patch_embed = PatchEmbed(spec_size, patch_size, embed_dim, patch_stride)
        grid = spec_size // patch_stride
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(
                BasicLayer(
                    embed_dim * 2**i,
                    grid // 2**i,
                    depth,
                    num_heads[i],
                    window,
                    mlp_ratio,
                    dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    i < len(depths) - 1,
                )
            )
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)
        sf = spec_size // 2 ** (len(depths) - 1) // patch_stride // self.freq_ratio
        self.tscam_conv = nn.Conv2d(self.num_features, classes_num, kernel_size=(sf, 3), padding=(0, 1))
        self.head = nn.Linear(classes_num, classes_num)
        self.apply(_init_weights)

    def reshape_wav2img(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, F) log-mel -> (B, 1, spec_size, spec_size): stretch time, fold it into rows."""
        _, _, t, f = x.shape
        target_t, target_f = self.spec_size * self.freq_ratio, self.spec_size // self.freq_ratio
        if t > target_t or f > target_f:
            raise ValueError(f"log-mel of {t} frames x {f} bins exceeds the HTS-AT input {target_t} x {target_f}")
        if t < target_t:
            x = F.interpolate(x, (target_t, f), mode="bicubic", align_corners=True)
        if f < target_f:
            x = F.interpolate(x, (x.shape[2], target_f), mode="bicubic", align_corners=True)
        x = x.permute(0, 1, 3, 2).contiguous()
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2], self.freq_ratio, x.shape[3] // self.freq_ratio)
        x = x.permute(0, 1, 3, 2, 4).contiguous()
        return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], x.shape[4])

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        x = log_mel(self.spectrogram_extractor, self.logmel_extractor, waveform)  # (B, 1, T, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(self.reshape_wav2img(x))
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)  # (B, tokens, C)
        # msclap's latent_output: AdaptiveAvgPool1d over the tokens regrouped by frequency
        # band; the same mean, taken in the same order for the same rounding.
        b, n, c = x.shape
        side = int(round(n**0.5))
        grid = x.permute(0, 2, 1).contiguous().reshape(b, c, side, side)
        band = side // self.freq_ratio
        grid = grid.reshape(b, c, side // band, band, side).permute(0, 1, 3, 2, 4).contiguous().reshape(b, c, band, -1)
        latent = F.adaptive_avg_pool1d(torch.flatten(grid, 2), 1).flatten(1)
        return {"embedding": latent}


class HTSATWrapper(nn.Module):
    """msclap's wrapper, kept for the ``htsat.`` key prefix."""

    def __init__(self, **kwargs):
        super().__init__()
        self.htsat = HTSATSwinTransformer(**kwargs)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.htsat(waveform)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
