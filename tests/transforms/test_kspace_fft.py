"""The one centred orthonormal FFT pair against numpy's reference, on odd and even sizes and on chosen axes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from medmoe.transforms.kspace_fft import fft2c, ifft2c


def numpy_centred(x: np.ndarray, axes, inverse: bool = False) -> np.ndarray:
    fft = np.fft.ifftn if inverse else np.fft.fftn
    return np.fft.fftshift(fft(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


@pytest.mark.parametrize("dim", [(-2, -1), -2, (0, 2)])
def test_matches_numpy_on_odd_and_even_axes(dim):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6)) + 1j * rng.standard_normal((2, 7, 6))
    axes = dim if isinstance(dim, tuple) else (dim,)
    k = fft2c(torch.from_numpy(x), dim=dim)
    np.testing.assert_allclose(k.numpy(), numpy_centred(x, axes), atol=1e-12)
    np.testing.assert_allclose(ifft2c(k, dim=dim).numpy(), x, atol=1e-12)
    np.testing.assert_allclose(
        ifft2c(torch.from_numpy(x), dim=dim).numpy(), numpy_centred(x, axes, inverse=True), atol=1e-12
    )


def test_real_input_becomes_complex64_and_complex128_is_kept():
    assert fft2c(torch.ones(1, 4, 4)).dtype == torch.complex64
    assert ifft2c(torch.ones(1, 4, 4, dtype=torch.complex128)).dtype == torch.complex128
    assert fft2c(torch.ones(1, 4, 4))[0, 2, 2].item() == pytest.approx(4.0)
