"""The dictionary-twin base shared by medmoe's transforms: apply one array transform per key."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.transforms import MapTransform, Transform


class KeyWise(MapTransform):
    """Apply ``self.transform`` to every present key; a ``ValueError`` is re-raised naming the key.

    Subclasses set ``self.transform`` (an array transform) in ``__init__``.
    """

    transform: Transform

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.transform(d[key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d
