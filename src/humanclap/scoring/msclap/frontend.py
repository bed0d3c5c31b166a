"""MS CLAP's log-mel front end, inside the audio tower as in msclap (torchlibrosa's layers).

msclap computes features in the model: ``torchlibrosa.stft.Spectrogram`` (an STFT done as
two ``Conv1d`` with fixed DFT x periodic-Hann kernels, centred with reflect padding, power
2) and ``LogmelFilterBank`` (a matmul with librosa's Slaney mel filters, then
``10 * log10(max(x, 1e-10))``; ref 1.0 and no top_db, so nothing else). Both are
re-implemented here with the same parameter names, so the frozen kernels of an msclap
``.pth`` (``stft.conv_real.weight``, ``stft.conv_imag.weight``, ``melW``) load as they are.

The kernels built here are computed the way torchlibrosa computes them (the DFT matrix as
``omega ** (n * k)`` in complex128, the window from scipy like librosa); the mel filters
come from ``transformers.audio_utils.mel_filter_bank`` with Slaney scale and norm, which
equals librosa's filters to float32 rounding (checked by ``parity/msclap_compare.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

AMIN = 1e-10  # torchlibrosa's floor before log10


def hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window librosa (and so torchlibrosa) uses, float64: scipy's
    ``get_window("hann", n_fft, fftbins=True)`` computed the way scipy computes it (a
    symmetric ``n_fft + 1`` cosine sum, last point dropped), so the same bits
    (tests/test_msclap.py) without importing scipy.signal (3 s)."""
    fac = np.linspace(-np.pi, np.pi, n_fft + 1)
    w = np.zeros(n_fft + 1)
    w += 0.5 * np.cos(0 * fac)
    w += 0.5 * np.cos(1 * fac)
    return w[:-1]


def stft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary conv kernels ``(n_fft // 2 + 1, 1, n_fft)`` of a periodic-Hann STFT."""
    x, y = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
    # the same expression torchlibrosa uses (not cos/sin of a reduced angle), so the
    # float64 values, and hence the float32 kernels, are the same bits
    w = np.power(np.exp(-2 * np.pi * 1j / n_fft), x * y)
    window = hann(n_fft)
    bins = n_fft // 2 + 1
    kernel = w[:, :bins] * window[:, None]
    return (np.real(kernel).T[:, None, :].astype(np.float32), np.imag(kernel).T[:, None, :].astype(np.float32))


def slaney_mel_filters(sampling_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's default mel filters (Slaney scale and area norm), ``(n_fft // 2 + 1, n_mels)``."""
    # lazy: keeps transformers out of `import humanclap.scoring.msclap.frontend`
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=float(fmin),
        max_frequency=float(fmax),
        sampling_rate=int(sampling_rate),
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


class STFT(nn.Module):
    """The conv-STFT: ``(batch, samples)`` -> real, imag ``(batch, 1, frames, bins)``."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, kernel_size=n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, kernel_size=n_fft, stride=hop_length, bias=False)
        real, imag = stft_kernels(n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(real))
            self.conv_imag.weight.copy_(torch.from_numpy(imag))
        self.requires_grad_(False)  # frozen in msclap (freeze_parameters=True)

        # The kernels of a fresh model (not saved: the checkpoint's own are the weights) and
        # the window, for the FFT path below.
        self.register_buffer("dft_real", torch.from_numpy(real), persistent=False)
        self.register_buffer("dft_imag", torch.from_numpy(imag), persistent=False)
        self.register_buffer("window", torch.from_numpy(hann(n_fft).astype(np.float32)), persistent=False)

    def uses_fft(self) -> bool:
        """Whether the loaded kernels are the periodic-Hann DFT (every msclap checkpoint:
        they are fixed at construction and frozen), so that an FFT computes the same STFT."""
        return bool(
            torch.allclose(self.conv_real.weight, self.dft_real, rtol=0, atol=1e-6)
            and torch.allclose(self.conv_imag.weight, self.dft_imag, rtol=0, atol=1e-6)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.uses_fft():
            # The same transform as the two 1024-tap convolutions, by FFT: 16 ms a 7 s
            # clip instead of 43 ms on the 2-core CPU (side by side). Equal to float32
            # rounding, which is not always negligible: in mel bins near the -100 dB floor
            # (clean tones, chirps) the STFT holds rounding noise, which the FFT and the
            # convolutions (and any other summation order) round differently: up to 0.36 dB
            # there, 3.3e-5 on an embedding's unit vector (README; parity/msclap_compare.py
            # and tests/test_msclap.py hold it to its bound). A float64 FFT gets no nearer the
            # 1e-5 gate: the rest is the float32 rounding of msclap's own convolutions.
            spec = torch.stft(
                x, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode="reflect", return_complex=True
            )  # (batch, bins, frames)
            return spec.real[:, None].transpose(2, 3), spec.imag[:, None].transpose(2, 3)
        x = F.pad(x[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        return (self.conv_real(x)[:, None].transpose(2, 3), self.conv_imag(x)[:, None].transpose(2, 3))


class Spectrogram(nn.Module):
    """Power spectrogram ``(batch, 1, frames, bins)`` (torchlibrosa's, power 2)."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.stft = STFT(n_fft, hop_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(x)
        return real**2 + imag**2


class LogmelFilterBank(nn.Module):
    """Power spectrogram -> log-mel in dB, ``(batch, 1, frames, n_mels)``."""

    def __init__(self, sampling_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        self.melW = nn.Parameter(
            torch.from_numpy(slaney_mel_filters(sampling_rate, n_fft, n_mels, fmin, fmax)), requires_grad=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(torch.matmul(x, self.melW), min=AMIN))


def log_mel(spectrogram_extractor: Spectrogram, logmel_extractor: LogmelFilterBank, x: torch.Tensor) -> torch.Tensor:
    """Waveform ``(batch, samples)`` -> log-mel ``(batch, 1, frames, n_mels)`` in float32.

    Always float32, whatever the autocast context: in half precision the conv-STFT of a
    7 s clip loses most of its dynamic range. (The two extractors stay direct children
    of the audio tower, as in msclap, so that the state-dict keys match.)
    """
    with torch.autocast(x.device.type, enabled=False):
        return logmel_extractor(spectrogram_extractor(x.float()))
