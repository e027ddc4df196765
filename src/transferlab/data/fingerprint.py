"""The identity of a dataset on disk, taken before anything loads: the one way a file is stamped, a
source's fingerprint, and what changed between two fingerprints.

A fingerprint is a plain dict (``result.json`` stores it): ``kind``, the facts that name the data (``root``,
``manifest``, ``version``…), for file-backed sources ``classes`` (per class: files, bytes and a digest of
their stamps), and ``digest`` over all of it. A file is stamped by path, size and modification time, never
read: 100,000 files take about a second (``benchmarks/benchmark.py --fingerprint-files``). Each source
registers its own fingerprint function beside its loader (``data.registry``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from transferlab.identity import digest

#: how many items a list of changes names before it says "and N more"
SHOWN = 5


def stat_stamp(path: str) -> tuple[str, int]:
    """``path<TAB>size<TAB>mtime_ns`` and the size: what changes when the file does, without reading it
    (``-`` for a file that cannot be stat-ed)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\t-\t-", 0
    return f"{path}\t{st.st_size}\t{st.st_mtime_ns}", st.st_size


def class_stamps(classes: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """Per class: how many files, their bytes, and a digest of their stamps (in the order given)."""
    out: dict[str, dict[str, Any]] = {}
    for name, paths in classes.items():
        h, total = hashlib.sha256(), 0
        for path in paths:
            line, size = stat_stamp(path)
            h.update(line.encode("utf-8", "surrogateescape") + b"\n")
            total += size
        out[str(name)] = {"files": len(paths), "bytes": total, "digest": h.hexdigest()[:16]}
    return out


def fingerprint(kind: str, classes: Mapping[str, Sequence[str]] | None = None, **facts: Any) -> dict[str, Any]:
    """A source's fingerprint: ``kind``, ``facts`` (JSON values), the stamps of ``classes``' files, and the digest."""
    out: dict[str, Any] = {"kind": kind, **facts}
    if classes is not None:
        out["classes"] = class_stamps(classes)
    out["digest"] = digest(out)
    return out


def _listed(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _class_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Classes added and removed, and files added, removed or changed in the classes both have."""
    added = [c for c in new if c not in old]
    removed = [c for c in old if c not in new]
    out = []
    if added:
        shown = [f"{c} ({new[c]['files']} files)" for c in added]
        out.append(f"{len(added)} class(es) added: {_listed(shown)}")
    if removed:
        out.append(f"{len(removed)} class(es) removed: {_listed(removed)}")
    more = [c for c in new if c in old and new[c]["files"] > old[c]["files"]]
    fewer = [c for c in new if c in old and new[c]["files"] < old[c]["files"]]
    edited = [c for c in new if c in old and new[c]["files"] == old[c]["files"] and new[c]["digest"] != old[c]["digest"]]
    if more:
        n = sum(new[c]["files"] - old[c]["files"] for c in more)
        out.append(f"{n} file(s) added in {_listed(more)}")
    if fewer:
        n = sum(old[c]["files"] - new[c]["files"] for c in fewer)
        out.append(f"{n} file(s) removed from {_listed(fewer)}")
    if edited:
        out.append(f"files replaced or modified (same count) in {_listed(edited)}")
    return out


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints of one source, in words (empty when nothing does)."""
    facts = [k for k in sorted(set(old) | set(new)) if k not in ("classes", "digest") and old.get(k) != new.get(k)]
    out = [f"{k} was {old.get(k)!r}, is {new.get(k)!r}" for k in facts]
    out += _class_changes(old.get("classes") or {}, new.get("classes") or {})
    if not out and old.get("digest") != new.get("digest"):
        out.append("its fingerprint differs")
    return out
