"""Classes that pretend to live in third-party modules, for writing pickles that reference them."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager


@contextmanager
def fake_modules(classes: dict[str, list[type]]):
    """Install, for the duration of the block, a module per key of ``classes`` (and its parent
    packages) holding those classes, renamed to belong there; ``sys.modules`` is restored after, so
    a reader of what was pickled inside never finds the modules."""
    names = set(classes)
    for module in classes:
        parts = module.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))
    saved = {k: sys.modules.get(k) for k in names}
    try:
        for name in sorted(names):
            sys.modules[name] = types.ModuleType(name)
        for module, members in classes.items():
            for cls in members:
                cls.__module__, cls.__qualname__ = module, cls.__name__
                setattr(sys.modules[module], cls.__name__, cls)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
