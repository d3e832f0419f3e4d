"""Reusable storage for large weight gradients written by hand-written backward passes.

Expert weight gradients are large (``e x d x h`` per layer: 38 MB for 64 experts at d = 192, h = 768)
and, with ``optimizer.zero_grad(set_to_none=True)`` (PyTorch's default), freshly allocated every
step. Above glibc's mmap threshold every such allocation returns new pages, so a ``bmm`` writing
into it pays a page fault per 4 kB: on a 2-core CPU the gradient ``bmm`` ran 6x slower into fresh
memory than into warm memory (``benchmarks/soft_moe.py``).

:class:`GradientStorage` keeps one warm buffer per gradient and hands out a *new view* of it each
step. Autograd stores that view as ``param.grad`` (it owns the only reference to the view, so it is
not copied), and ``zero_grad(set_to_none=True)`` drops the view again. A buffer is reused only when
no tensor other than the storage's own base shares it, so gradient accumulation
(``set_to_none=False``, several backward calls per step) or a caller holding on to an old ``.grad``
gets a freshly allocated tensor: values never change behind anyone's back.
"""

from __future__ import annotations

import torch

__all__ = ["GradientStorage"]


def _storage_refs(t: torch.Tensor) -> int | None:
    """Number of references to ``t``'s storage, or None where this torch build cannot tell."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    return int(count(t.untyped_storage()._cdata))


class GradientStorage:
    """Warm, reusable output tensors for gradients, keyed by name (not part of any state dict).

    Example::

        >>> storage = GradientStorage()
        >>> a = storage.take("w", (2, 3), torch.float32, torch.device("cpu"))
        >>> b = storage.take("w", (2, 3), torch.float32, torch.device("cpu"))  # ``a`` is alive: fresh memory
        >>> a.data_ptr() != b.data_ptr()
        True
        >>> del a, b
        >>> storage.take("w", (2, 3), torch.float32, torch.device("cpu")).shape
        torch.Size([2, 3])
    """

    def __init__(self) -> None:
        self._buffers: dict[str, tuple[torch.Tensor, int]] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor to write gradient ``name`` into: a view of the warm buffer when free.

        Args:
            name: which gradient (one buffer per name).
            shape, dtype, device: of the gradient.

        Returns:
            a contiguous tensor of ``shape`` nobody else references; its old values are undefined.
        """
        shape = tuple(shape)
        entry = self._buffers.get(name)
        if entry is not None:
            base, free_refs = entry
            if base.shape == shape and base.dtype == dtype and base.device == device:
                if _storage_refs(base) == free_refs:
                    return base.view(shape)  # a new view: autograd may keep it as .grad without a copy
                return torch.empty(shape, dtype=dtype, device=device)  # still in use: do not touch it
        base = torch.empty(shape, dtype=dtype, device=device)
        free_refs = _storage_refs(base)
        if free_refs is None:  # cannot prove a buffer is free: never reuse
            return base
        self._buffers[name] = (base, free_refs)
        return base.view(shape)

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()

    def __deepcopy__(self, memo: dict) -> GradientStorage:
        return GradientStorage()  # buffers are scratch memory: a copied module starts cold

    def __getstate__(self) -> dict:
        return {"_buffers": {}}
