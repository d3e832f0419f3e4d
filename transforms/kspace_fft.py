"""The centred orthonormal FFT pair of the fastMRI convention, written once for every k-space user.

::

    kspace = fftshift(fftn(ifftshift(image), norm="ortho"))
    image = fftshift(ifftn(ifftshift(kspace), norm="ortho"))

over the axes ``dim`` (the last two by default), so ``sum |image|^2 == sum |kspace|^2`` (Parseval) and a round trip
is exact to float precision. Used by the k-space transforms, the readout-oversampling removal (one axis) and the
fastMRI demo cohort. MONAI's ``monai.networks.blocks.fft_utils_t.fftn_centered_t`` computes the same transform
but on real ``(..., 2)`` pairs and only over trailing axes; here tensors stay complex and any axes can be chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["fft2c", "ifft2c"]


def _centred(x: torch.Tensor, dim: int | Sequence[int], fft: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``fftshift(fft(ifftshift(x)))`` over ``dim``, orthonormal; real input is cast to ``complex64``."""
    x = torch.as_tensor(x)
    x = x if torch.is_complex(x) else x.to(torch.complex64)
    return torch.fft.fftshift(fft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def fft2c(image: torch.Tensor, dim: int | Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal FFT (image -> k-space) over ``dim``, fastMRI convention.

    Args:
        image: any shape; real input is cast to ``complex64``, complex input keeps its precision.
        dim: axis or axes to transform; the last two (the 2D case) by default.

    Returns:
        complex tensor shaped like ``image``.

    Example:
        >>> fft2c(torch.ones(1, 4, 4))[0, 2, 2]  # all energy at the centre of k-space
        tensor(4.+0.j)
    """
    return _centred(image, dim, torch.fft.fftn)


def ifft2c(kspace: torch.Tensor, dim: int | Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal inverse FFT (k-space -> image) over ``dim``: the inverse of :func:`fft2c`, with the
    same arguments, dtype rule and output shape. Example:

        >>> x = torch.randn(2, 8, 6, dtype=torch.complex128)
        >>> torch.allclose(ifft2c(fft2c(x)), x)
        True
    """
    return _centred(kspace, dim, torch.fft.ifftn)
