"""Small shared helpers: atomic file writing, the cache folder, figures without pyplot.

Example:
    >>> from medmoe.utils import atomic_write_text
    >>> atomic_write_text(out / "metrics.json", "{}")  # doctest: +SKIP
"""

from .atomic import (
    atomic_open,
    atomic_path,
    atomic_save_figure,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_rows,
    atomic_write_text,
    is_temp_name,
    remove_stale_temp_files,
)
from .cache import default_cache_root
from .safe_names import FileNames, id_file_stem, safe_stem

__all__ = [
    "FileNames",
    "atomic_open",
    "atomic_path",
    "atomic_save_figure",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_rows",
    "atomic_write_text",
    "default_cache_root",
    "id_file_stem",
    "is_temp_name",
    "remove_stale_temp_files",
    "safe_stem",
]
