"""MS CLAP 2022's audio tower: PANNs' CNN14 with msclap's parameter names.

Same layers, order and names as ``msclap.models.audio.Cnn14`` (so an msclap ``.pth`` loads
with a strict key check); only the pieces an embedding needs are computed:
``fc_audioset`` (AudioSet class logits) is kept for the keys but not run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from humanclap.scoring.msclap.frontend import LogmelFilterBank, Spectrogram, log_mel


class ConvBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU, then average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class Cnn14(nn.Module):
    """Waveform ``(batch, samples)`` -> ``{"embedding": (batch, out_emb)}``."""

    def __init__(
        self,
        sampling_rate: int,
        window_size: int,
        hop_size: int,
        mel_bins: int,
        fmin: float,
        fmax: float,
        classes_num: int,
        out_emb: int,
        channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
    ):
        super().__init__()
        self.spectrogram_extractor = Spectrogram(window_size, hop_size)
        self.logmel_extractor = LogmelFilterBank(sampling_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        ins = (1, *channels[:-1])
        for i, (c_in, c_out) in enumerate(zip(ins, channels), start=1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, c_out))
        self.n_blocks = len(channels)
        self.fc1 = nn.Linear(channels[-1], out_emb, bias=True)
        self.fc_audioset = nn.Linear(out_emb, classes_num, bias=True)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        x = log_mel(self.spectrogram_extractor, self.logmel_extractor, waveform)  # (B, 1, T, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BatchNorm over the mel bins
        for i in range(1, self.n_blocks + 1):
            # the last block does not pool (PANNs' (1, 1) pool)
            pool = (2, 2) if i < self.n_blocks else (1, 1)
            x = getattr(self, f"conv_block{i}")(x, pool_size=pool)
            x = F.dropout(x, p=0.2, training=self.training)
        x = torch.mean(x, dim=3)  # over frequency
        x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)  # max + mean over time
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        return {"embedding": F.dropout(x, p=0.5, training=self.training)}
