"""Keep the entries every bundle shares in one file: write them into each bundle's configs, or check them.

Usage (from the repository root)::

    python -m medmoe.apps.bundle_sync            # write bundles/shared/configs.json into every bundle's configs
    python -m medmoe.apps.bundle_sync --check    # exit 1 naming each bundle, file and id that differs

Each bundle folder stays a standalone MONAI bundle (``python -m monai.bundle run --config_file
bundles/<name>/configs/train.json`` reads one file and nothing outside the folder), so the shared entries are
copied into the bundles instead of included at run time (MONAI's ``%file#id`` macros resolve paths against the
working directory and an included entry cannot be overridden by id).

``bundles/shared/configs.json`` maps a config file name (``train.json``, ``evaluate.json``, ...) to the entries
that every bundle's file of that name holds, keyed by MONAI id (``"optimizer"``, ``"train#trainer"``,
``"eval_writer#n_bootstrap"``): an id names the whole value written there. An id resolves the way MONAI's override
files use it: a top-level key spelled with ``#`` (``"train#dataloader#sampler"`` in multi_gpu_train.json) is that
key, otherwise the id walks the nested dictionaries. Writing keeps each bundle's own entries and key order; an id
a bundle lacks is added after the shared id that precedes it (nested in train.json, as a top-level override id in
the files layered on it). An id removed from the shared source stays in the bundles as their own entry.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["check", "dumps", "main", "sync"]

_WIDTH = 120  # the repository's line length
_INLINE_ITEMS = 3  # dictionaries with more items are spread over lines even when they fit


def _bundles(bundles_dir: Path) -> list[Path]:
    """The bundle folders: those with a configs/metadata.json."""
    return sorted(p for p in bundles_dir.iterdir() if (p / "configs" / "metadata.json").is_file())


def _locate(config: dict, config_id: str) -> tuple[dict, str] | None:
    """The dictionary holding ``config_id`` and its key there, or None when the id is absent."""
    node, rest = config, config_id
    while True:
        if rest in node:
            return node, rest
        head, sep, tail = rest.partition("#")
        if not sep or not isinstance(node.get(head), dict):
            return None
        node, rest = node[head], tail


def _insert_after(mapping: dict, after: str | None, key: str, value: Any) -> None:
    """Insert ``key: value`` into ``mapping`` right after ``after`` (at the end when None or absent), in place."""
    items = list(mapping.items())
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == after), len(items))
    items.insert(at, (key, value))
    mapping.clear()
    mapping.update(items)


def _set(config: dict, config_id: str, value: Any, previous: str | None, nested: bool) -> None:
    """Set ``config_id`` to ``value``: in place when present, else after the shared id ``previous``."""
    found = _locate(config, config_id)
    if found is not None:
        found[0][found[1]] = value
        return
    if not nested:  # an override file: the id becomes a top-level key, as MONAI reads it
        _insert_after(config, previous if previous in config else None, config_id, value)
        return
    *parents, key = config_id.split("#")
    node = config
    for part in parents:
        if part not in node:
            _insert_after(node, None, part, {})
        elif not isinstance(node[part], dict):
            raise ValueError(f"shared id '{config_id}': '{part}' holds a {type(node[part]).__name__}, not a dictionary")
        node = node[part]
    same_parent = previous is not None and previous.rpartition("#")[0] == config_id.rpartition("#")[0]
    _insert_after(node, previous.rpartition("#")[2] if same_parent else None, key, value)


def _render(value: Any, indent: int, used: int) -> str:
    """JSON text of ``value`` at ``indent`` spaces, ``used`` characters already on its first line."""
    compact = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or not value:
        return compact
    children = value.values() if isinstance(value, dict) else value
    small = isinstance(value, list) or len(value) <= _INLINE_ITEMS
    fits = used + len(compact) < _WIDTH  # one column left for the comma after it
    if small and fits and not any(isinstance(c, dict) and c for c in children):
        return compact
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        lines = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: "
            + _render(v, indent + 4, len(pad) + len(json.dumps(k, ensure_ascii=False)) + 3)
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(lines) + "\n" + " " * indent + "}"
    lines = [pad + _render(v, indent + 4, len(pad) + 1) for v in value]
    return "[\n" + ",\n".join(lines) + "\n" + " " * indent + "]"


def dumps(config: dict) -> str:
    """The JSON text the sync writes: 4-space indent, short lists and small dictionaries on one line."""
    return _render(config, 0, 0) + "\n"


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); fix the file and run the sync again") from err


def _shared(shared: Path) -> dict[str, dict[str, Any]]:
    data = _load(shared)
    bad = [name for name, entries in data.items() if not (name.endswith(".json") and isinstance(entries, dict))]
    if bad:
        raise ValueError(f"{shared}: top-level keys must be config file names mapping ids to values, got {bad}")
    for name, entries in data.items():
        for inner in entries:
            outer = next((i for i in entries if inner.startswith(i + "#")), None)
            if outer is not None:
                raise ValueError(f"{shared}: {name} id '{inner}' lies inside '{outer}'; keep one of the two")
    return data


def check(bundles_dir: Path = Path("bundles"), shared: Path | None = None) -> list[str]:
    """Every shared id whose value in a bundle's config differs from the shared source, as messages.

    Args:
        bundles_dir: the folder holding the bundle folders.
        shared: the shared source; default ``<bundles_dir>/shared/configs.json``.

    Returns:
        One ``"<bundle>/configs/<file>: <id> ..."`` message per drifted or missing id; empty when all agree.
    """
    shared = shared or bundles_dir / "shared" / "configs.json"
    problems = []
    for file_name, entries in _shared(shared).items():
        for bundle in _bundles(bundles_dir):
            path = bundle / "configs" / file_name
            if not path.is_file():
                problems.append(f"{bundle.name}/configs/{file_name}: missing (the shared source has entries for it)")
                continue
            config = _load(path)
            for config_id, value in entries.items():
                found = _locate(config, config_id)
                if found is None:
                    problems.append(f"{bundle.name}/configs/{file_name}: id '{config_id}' is missing")
                elif found[0][found[1]] != value:
                    problems.append(
                        f"{bundle.name}/configs/{file_name}: id '{config_id}' differs from {shared} "
                        f"(bundle {json.dumps(found[0][found[1]])[:80]}, shared {json.dumps(value)[:80]})"
                    )
    return problems


def sync(bundles_dir: Path = Path("bundles"), shared: Path | None = None) -> list[Path]:
    """Write the shared source's entries into every bundle's configs; return the files whose text changed.

    Args:
        bundles_dir: the folder holding the bundle folders.
        shared: the shared source; default ``<bundles_dir>/shared/configs.json``.
    """
    shared = shared or bundles_dir / "shared" / "configs.json"
    changed = []
    for file_name, entries in _shared(shared).items():
        for bundle in _bundles(bundles_dir):
            path = bundle / "configs" / file_name
            config = _load(path) if path.is_file() else {}
            previous = None
            for config_id, value in entries.items():
                _set(config, config_id, value, previous, file_name == "train.json")
                previous = config_id
            text = dumps(config)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: sync (default) or ``--check``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m medmoe.apps.bundle_sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 listing every id that differs")
    parser.add_argument("--bundles", type=Path, default=Path("bundles"), help="folder of bundle folders")
    parser.add_argument("--shared", type=Path, default=None, help="shared source (default <bundles>/shared/...)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.bundles, args.shared)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run `python -m medmoe.apps.bundle_sync` to write the shared entries", file=sys.stderr)
        return 1 if problems else 0
    for path in sync(args.bundles, args.shared):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
