"""Small shared helpers (atomic file output)."""

from tsn.utils.io import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_json", "atomic_write_text"]
