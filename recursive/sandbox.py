"""The runtime guard: a process-wide audit hook for every process that executes recipe code.

`install_guard(read_roots, write_roots)` adds a `sys.addaudithook` hook (it cannot be removed
once added) that refuses, by raising `SandboxViolation` (a PermissionError) inside the
offending call:
- opening a file for reading outside `read_roots` and the Python installation (stdlib,
  site-packages, the `recursive` package itself), so imports keep working;
- opening a file for writing, or creating, renaming, removing, linking or chmod-ing a path,
  outside `write_roots`;
- any path under `deny_roots` (e.g. the run's eval/ folder), even inside the other roots;
- starting processes (subprocess, os.system, exec*, spawn*, fork, posix_spawn), sending
  signals to other processes, sockets of any kind, ctypes (dlopen, calls into native code),
  frame introspection (sys._getframe) and new audit hooks' removal tricks (sys.addaudithook
  is allowed: a second hook cannot weaken this one).

It is defence in depth behind the static policy of `recursive.recipe`: the recipe can reach
none of these calls by policy; the guard stops them if the policy is ever bypassed. See
docs/threat-model.md for what it does not cover (C code that makes syscalls directly,
CPU/memory exhaustion, which the resource limits handle).
"""

from __future__ import annotations

import os
import site
import stat
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Iterable

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_MUTATIONS = {  # event -> indices of path arguments that are written to
    "os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,),
    "os.chown": (0,), "os.symlink": (0, 1), "os.link": (0, 1), "os.truncate": (0,),
    "os.utime": (0,), "os.chflags": (0,), "os.lchflags": (0,), "os.lchmod": (0,), "os.mkfifo": (0,),
    "os.mknod": (0,), "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,),
    "shutil.copytree": (1,), "os.setxattr": (0,), "os.removexattr": (0,),
}
_REFUSED_PREFIXES = ("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                     "pty.", "socket.", "ctypes.", "_ctypes.", "os.kill", "os.killpg", "signal.pthread_kill",
                     "os.system", "os.startfile", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.",
                     "imaplib.", "poplib.", "nntplib.", "telnetlib.", "sys._current_frames",
                     "cpython._PySys_ClearAuditHooks", "os.chroot",
                     "os.setuid", "os.seteuid", "mmap.", "winreg.", "msvcrt.")
_installed: list["_Guard"] = []
_local = threading.local()
RECIPE_FILENAME = "<recipe>"  # the file name recursive.recipe compiles recipe code under


class SandboxViolation(PermissionError):
    """A recipe process tried something the runtime guard refuses."""


def python_roots() -> list[Path]:
    """Where a Python process legitimately reads code: the installation and site-packages,
    plus the `recursive` package (an editable install lives in the repository)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            roots.add(sysconfig.get_paths()[key])
        except KeyError:
            pass
    try:
        roots.update(site.getsitepackages())
    except AttributeError:
        pass
    import recursive
    roots.update(str(Path(p)) for p in recursive.__path__)
    try:
        import recursive.train as t
        roots.update(str(Path(p)) for p in t.__path__)
        import recursive.evaluate as ev
        roots.update(str(Path(p)) for p in ev.__path__)
    except Exception:  # noqa: BLE001 (a partial install still gets a guard)
        pass
    return [Path(os.path.realpath(r)) for r in roots if r]


# read-only system files that torch, numpy and the dynamic loader open at run time
_SYSTEM_READ = [Path(p) for p in ("/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu",
                                  "/sys/fs/cgroup", "/dev/null", "/dev/urandom", "/dev/shm",
                                  "/etc/ld.so.cache", "/usr/lib", "/lib", "/lib64", "/usr/lib64",
                                  "/usr/local/cuda", "/dev/nvidia", "/proc/driver/nvidia",
                                  "/etc/localtime", "/usr/share/zoneinfo")]


def _real(path) -> Path | None:
    if isinstance(path, int):
        return None  # an fd the process already holds
    try:
        return Path(os.path.realpath(os.fsdecode(path)))
    except (TypeError, ValueError):
        return Path("/nonexistent/unresolvable")


def _under(p: Path, roots: Iterable[Path]) -> bool:
    for r in roots:
        if p == r or r in p.parents:
            return True
    # /dev/nvidia0, /dev/nvidiactl: prefixes, not folders
    return any(str(p).startswith(str(r)) for r in roots if str(r).startswith("/dev/"))


class _Guard:
    def __init__(self, read_roots, write_roots, deny_roots, scoped: bool = False):
        self.scoped = scoped
        self.write = [Path(os.path.realpath(r)) for r in write_roots]
        self.read = python_roots() + _SYSTEM_READ + [Path(os.path.realpath(r)) for r in read_roots] + self.write
        self.deny = [Path(os.path.realpath(r)) for r in deny_roots]
        self.violations: list[str] = []

    def check_torch_file(self, name: str, attr: str, args: tuple, kwargs: dict) -> None:
        """The checks an `open` audit event would get, for torch's C++ file APIs."""
        if attr == "load_library":
            self.refuse(f"{name}()")
        if attr == "save":
            target, writing = (args[1] if len(args) > 1 else kwargs.get("f")), True
        else:
            target, writing = (args[0] if args else kwargs.get("f", kwargs.get("filename"))), False
        if not isinstance(target, (str, bytes, os.PathLike)):
            return  # a file object: opened through Python's open, which was checked then
        p = _real(target)
        if p is None:
            return
        if _under(p, self.deny) or (writing and not _under(p, self.write)) or not _under(p, self.read):
            self.refuse(f"{name}() on {p}")

    def refuse(self, what: str):
        self.violations.append(what)
        raise SandboxViolation(f"sandbox: {what} refused")

    def __call__(self, event: str, args: tuple) -> None:
        if self.scoped and not getattr(_local, "in_recipe", False):
            return  # the framework's own work (checkpoints, compile workers, collectives)
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            p = _real(path)
            if p is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                      (isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
            if _under(p, self.deny):
                self.refuse(f"opening {p}")
            if writing and not _under(p, self.write):
                self.refuse(f"opening {p} for writing")
            if not _under(p, self.read):
                self.refuse(f"opening {p}")
            return
        if event in _PATH_MUTATIONS:
            for i in _PATH_MUTATIONS[event]:
                if i < len(args):
                    p = _real(args[i])
                    if p is not None and (not _under(p, self.write) or _under(p, self.deny)):
                        self.refuse(f"{event} on {p}")
            return
        if event in ("os.listdir", "os.scandir"):
            p = _real(args[0] if args and args[0] is not None else ".")
            if p is not None and (_under(p, self.deny) or not _under(p, self.read)):
                self.refuse(f"{event} of {p}")
            return
        if event == "sys._getframe":
            # libraries (typing, dataclasses, torch.save) read their own frames; recipe code may not
            if getattr(_local, "busy", False):
                return
            _local.busy = True
            try:
                caller = sys._getframe(1)
            finally:
                _local.busy = False
            if caller.f_code.co_filename == RECIPE_FILENAME:
                self.refuse("sys._getframe from recipe code")
            return
        if event.startswith(_REFUSED_PREFIXES):
            self.refuse(event)


def install_guard(read_roots: Iterable = (), write_roots: Iterable = (), deny_roots: Iterable = (),
                  scoped: bool = False) -> None:
    """Install the runtime guard in this process (for good: audit hooks cannot be removed).
    read_roots: extra folders/files the process may read (tokenizer, shards, teacher);
    write_roots: folders it may write (the attempt folder); deny_roots: never, even if inside
    another root. Python's own installation is always readable, so imports keep working.
    scoped=True: the guard acts only while recipe code runs (inside `recipe_scope()`, which
    recursive.recipe enters around every recipe call and the module's own execution): the
    training process itself must write checkpoints, start compile workers and talk to its
    peers, the recipe may do none of it."""
    guard = _Guard(list(read_roots), list(write_roots), list(deny_roots), scoped=scoped)
    _guard_torch_file_apis(guard)
    _installed.append(guard)
    sys.addaudithook(guard)


# torch entry points that open files or load native code from C++, where no audit event is
# raised (torch.save writes through its own zip writer): wrapped so that a guard sees them
_TORCH_FILE_APIS = (("torch", "save"), ("torch", "load"), ("torch", "from_file"),
                    ("torch.UntypedStorage", "from_file"), ("torch.jit", "save"), ("torch.jit", "load"),
                    ("torch.ops", "load_library"), ("torch.classes", "load_library"))


def _guard_torch_file_apis(guard: "_Guard") -> None:
    if "torch" not in sys.modules:
        return
    import functools
    import importlib
    for owner_name, attr in _TORCH_FILE_APIS:
        try:
            owner = eval(owner_name, {"torch": importlib.import_module("torch")})  # noqa: S307 (fixed names)
            fn = getattr(owner, attr)
        except Exception:  # noqa: BLE001 (an API this torch does not have)
            continue
        if getattr(fn, "__recursive_guarded__", False):
            continue

        def make(fn=fn, name=f"{owner_name}.{attr}", attr=attr):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                if not guard.scoped or getattr(_local, "in_recipe", False):
                    guard.check_torch_file(name, attr, args, kwargs)
                return fn(*args, **kwargs)
            wrapper.__recursive_guarded__ = True
            return wrapper
        try:
            setattr(owner, attr, make())
        except (AttributeError, TypeError):
            continue


class recipe_scope:
    """Marks the current thread as running recipe code for scoped guards (re-entrant)."""

    def __enter__(self):
        self.previous = getattr(_local, "in_recipe", False)
        _local.in_recipe = True

    def __exit__(self, *exc):
        _local.in_recipe = self.previous
        return False


def installed() -> bool:
    return bool(_installed)


def violations() -> list[str]:
    """What the guards of this process refused so far (for error reports)."""
    return [v for g in _installed for v in g.violations]
