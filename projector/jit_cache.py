"""An on-disk cache of the numba code the projector runs, shared by every process of the user.

Two sets of numba functions: the projector's own kernels (:mod:`~sentrycam.projector.layout`,
all a layer's first map needs) and pynndescent's (NN-descent, for large later samples only),
which pynndescent compiles mostly without ``cache=True``, so each new Python process spent
20-60 s of CPU compiling them again. This module gives the functions of either set that have no
cache of their own a disk cache in the user's cache folder, keyed as numba keys its own caches
(source hash, signature, CPU, numba and Python versions), so a stale entry is never loaded: a
new pynndescent or numba simply compiles afresh. Enabling the projector's own set imports
nothing beyond numba.

It changes nothing else in the process: no environment variable, no ``numba.config`` setting;
functions that already cache (``cache=True``) keep numba's own location.

Where: ``$SENTRYCAM_CACHE_DIR/numba`` if that variable is set, otherwise the platform's user
cache folder (``~/.cache/sentrycam/numba`` on Linux, ``~/Library/Caches/sentrycam/numba`` on
macOS, ``%LOCALAPPDATA%\\sentrycam\\Cache\\numba`` on Windows). Deleting the folder is always
safe (``python -m sentrycam.projector --clear``); the next process compiles again.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: The projector's own numba kernels (the layout SGD of the first map and of the polish).
OWN = ("sentrycam.projector.layout",)
#: pynndescent's NN-descent (samples above ``exact_knn_max`` points); imported when enabled.
NN_DESCENT = ("pynndescent",)
CACHE_ENV = "SENTRYCAM_CACHE_DIR"
#: NN-descent's drivers take the metric as a function argument, which numba cannot cache
#: ("uses dynamic globals"): left alone, so no process warns about it. Their callees cache.
UNCACHEABLE_PREFIX = "nn_descent"
_lock = threading.Lock()


def cache_dir() -> Path:
    """The folder the projector's numba cache lives in (see module doc); not created here."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser() / "numba"
    from numba.misc.appdirs import AppDirs  # numba's copy of appdirs: no extra dependency

    return Path(AppDirs("sentrycam", appauthor=False).user_cache_dir) / "numba"


def _cache_class(root: Path) -> type:
    """A numba FunctionCache class that stores every function's entries under ``root``."""
    from numba.core.caching import (CompileResultCacheImpl, FunctionCache,
                                    UserProvidedCacheLocator)

    class Locator(UserProvidedCacheLocator):
        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = str(root / self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            # skip UserProvidedCacheLocator's check of numba.config.CACHE_DIR: ours is fixed
            return super(UserProvidedCacheLocator, cls).from_function(py_func, py_file)

    class Impl(CompileResultCacheImpl):
        _locator_classes = [Locator]

    class SentrycamFunctionCache(FunctionCache):
        _impl_class = Impl

    return SentrycamFunctionCache


def enable(packages: tuple[str, ...] = OWN, root: Path | None = None) -> int:
    """Give every uncached numba function of ``packages`` (:data:`OWN` or :data:`NN_DESCENT`:
    modules or packages, imported here) a disk cache under ``root`` (default
    :func:`cache_dir`). Idempotent and thread-safe. Returns the number of functions newly
    cached (0 when the folder cannot be written: compiling still works, it is just not kept)."""
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    root = root or cache_dir()
    with _lock:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("numba cache folder %s unusable (%s): compiling in memory", root, exc)
            return 0
        cache_class = _cache_class(root)
        enabled = 0
        for dispatcher in _dispatchers(packages, load=True):
            if (isinstance(dispatcher._cache, NullCache) and isinstance(dispatcher, CPUDispatcher)
                    and not dispatcher.py_func.__name__.startswith(UNCACHEABLE_PREFIX)):
                try:
                    dispatcher._cache = cache_class(dispatcher.py_func)
                except RuntimeError:  # no source file (e.g. a generated function)
                    continue
                enabled += 1
    if enabled:
        log.debug("numba disk cache at %s for %d functions", root, enabled)
    return enabled


def loaded_from_disk(root: Path | None = None) -> int:
    """How many compiled functions this process loaded from the cache folder ``root`` (default
    :func:`cache_dir`) rather than compiling them (of the sets already imported)."""
    root = str(root or cache_dir())
    return sum(sum(dispatcher._cache_hits.values())
               for dispatcher in _dispatchers(OWN + NN_DESCENT, load=False)
               if str(getattr(dispatcher._cache, "cache_path", "")).startswith(root))


def _dispatchers(packages: tuple[str, ...], load: bool) -> list:
    """The module-level numba dispatchers of ``packages`` (and their submodules); ``load``:
    import them first, otherwise only those already imported count."""
    import importlib

    from numba.core.dispatcher import Dispatcher

    if load:
        for package in packages:
            importlib.import_module(package)
    found: dict[int, Dispatcher] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not any(name == p or name.startswith(p + ".") for p in packages):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher):
                found[id(value)] = value
    return list(found.values())


def clear(root: Path | None = None) -> Path:
    """Delete the cache folder (safe at any time); returns the folder removed."""
    root = root or cache_dir()
    shutil.rmtree(root, ignore_errors=True)
    return root
