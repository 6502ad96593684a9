"""Hostile and careless inputs, as an attacker or a tired user would give them: each case is made here
at test time and asserts the exit status, one clear line on stderr, and that nothing outside the
expected outputs changed (a digest of the surrounding folders before and after)."""
import hashlib
import io
import json
import os
import resource
import stat
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def digest(root):
    """Every entry under root: relative path -> kind and content (file hash, link target, device)."""
    out = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                v = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                v = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                v = ("dir",)
            else:
                v = ("other", stat.S_IFMT(st.st_mode))
            out[str(p.relative_to(root))] = v
    return out


def error_lines(p):
    return [l for l in p.stderr.splitlines() if l.strip()]


def assert_refused(p, *words, status=1):
    """Exit status, exactly one line on stderr, naming the problem."""
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    lines = error_lines(p)
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def small_jpeg(path, size=(96, 64), src="dog.jpg"):
    Image.open(IMAGES / src).resize(size).save(path, "JPEG", quality=90)


def run_everything(samfast, tiny, inp, out, *extra):
    return samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", inp, "--output", out, *FAST, *extra)


# ---- data loss: names that leave the output folder, --overwrite ------------------------------------

def test_dot_names_never_leave_the_output_folder(samfast, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for n in ("...jpg", "..jpg", ".jpg", "a.jpg"):  # ".jpg" has no extension (a dot file), as in Python
        small_jpeg(data / n)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's own file")
    before_data, before_out = digest(data), digest(out)
    (tmp_path / "sibling.txt").write_text("beside the output folder")

    for extra in ((), ("--overwrite",)):
        p = run_everything(samfast, tiny, data, out, *extra)
        assert p.returncode == 0, p.stderr
        assert "3 done" in p.stdout
        assert digest(data) == before_data  # inputs untouched
        assert (tmp_path / "sibling.txt").read_text() == "beside the output folder"
        assert (out / "keep.txt").read_text() == "the user's own file"
        # upstream amg.py's names: os.path.splitext keeps leading dots ("..jpg" -> "..jpg")
        assert sorted(os.listdir(out)) == ["...jpg", "..jpg", "a", "keep.txt"]
        for d in ("...jpg", "..jpg", "a"):
            assert (out / d / "metadata.csv").is_file()
    assert {k: v for k, v in digest(out).items() if k.startswith("keep")} == before_out


def test_overwrite_never_removes_what_is_not_ours(samfast, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    small_jpeg(data / "a.jpg")
    small_jpeg(data / "b.jpg", src="truck.jpg")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "thesis.tex").write_text("years of work")  # a user's folder that has an image's name
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x").write_text("x")
    os.symlink(victim, out / "b")  # a symlink in the way
    before = digest(tmp_path)
    p = run_everything(samfast, tiny, data, out, "--overwrite")
    assert p.returncode == 1
    assert "a.jpg: FAILED" in p.stderr and "is not samfast's output" in p.stderr
    assert "b.jpg: FAILED" in p.stderr
    after = digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out/.samfast")} == before


def test_an_overlay_or_json_name_taken_by_the_user_is_never_replaced(samfast, tiny, tmp_path):
    """NAME.overlay.png is samfast's only beside NAME's finished outputs (it is put in place after
    them), and NAME.json only when it holds records: else the image fails and the file stays."""
    data = tmp_path / "data"
    data.mkdir()
    small_jpeg(data / "a.jpg")
    small_jpeg(data / "a.overlay.png")  # an input in the folder that is also the output folder
    small_jpeg(data / "b.jpg", src="truck.jpg")
    (data / "b.json").write_text('{"my": "labels"}')
    before = digest(data)
    for extra in ((), ("--overwrite",)):
        p = run_everything(samfast, tiny, data, data, "--overlay")
        assert p.returncode == 1 and "a.jpg: FAILED" in p.stderr and "a.overlay.png exists and is not" in p.stderr
        assert {k: v for k, v in digest(data).items() if k in before} == before
        p = run_everything(samfast, tiny, data / "b.jpg", data, "--output-mode", "coco_rle", *extra)
        assert p.returncode == 1 and "b.json exists and is not samfast's output" in p.stderr, p.stderr
        assert {k: v for k, v in digest(data).items() if k in before} == before
    # Its own outputs a re-run skips, and replaces with --overwrite; an overlay missing beside
    # finished masks is made.
    out = tmp_path / "out"
    assert run_everything(samfast, tiny, data / "b.jpg", out, "--output-mode", "coco_rle").returncode == 0
    assert "1 skipped (already done)" in run_everything(samfast, tiny, data / "b.jpg", out, "--output-mode", "coco_rle").stdout
    p = run_everything(samfast, tiny, data / "b.jpg", out, "--output-mode", "coco_rle", "--overlay")
    assert p.returncode == 0 and "1 done" in p.stdout and (out / "b.overlay.png").is_file()
    p = run_everything(samfast, tiny, data / "b.jpg", out, "--output-mode", "coco_rle", "--overlay", "--overwrite")
    assert p.returncode == 0 and "1 done" in p.stdout, p.stderr


def test_names_up_to_the_file_systems_limit_are_written(samfast, tiny, tmp_path):
    """255 bytes is the longest name: temporaries must not make an output's name longer."""
    data = tmp_path / "data"
    data.mkdir()
    small_jpeg(data / ("x" * 250 + ".jpg"))  # outputs "x"*250 (binary_mask), "x"*250 + ".json"
    for mode in ("binary_mask", "coco_rle"):
        p = run_everything(samfast, tiny, data, tmp_path / mode, "--output-mode", mode)
        assert p.returncode == 0 and "1 done" in p.stdout, p.stderr
    out = tmp_path / ("y" * 255)
    p = samfast("segment", "--checkpoint", tiny, "--device", "cpu", "--image", data / ("x" * 250 + ".jpg"),
                "--point", "5,5", "--out", out)
    assert p.returncode == 0 and (out / "result.json").is_file(), p.stderr


def test_output_names_reserved_for_samfast_are_refused(samfast, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    small_jpeg(data / ".samfast-lock.jpg")
    small_jpeg(data / ".samfast-tmp-1-x.jpg")
    small_jpeg(data / "ok.jpg")
    out = tmp_path / "out"
    p = run_everything(samfast, tiny, data, out)
    assert p.returncode == 1
    assert p.stderr.count("reserved for samfast's own files") == 2
    assert sorted(os.listdir(out)) == ["ok"]


@pytest.mark.parametrize("kind", ["devnull", "symlink", "fifo"])
def test_make_checkpoint_never_replaces_a_non_regular_file(samfast, tmp_path, kind):
    if kind == "devnull":
        target = Path("/dev/null")
    elif kind == "symlink":
        real = tmp_path / "real.pth"
        real.write_bytes(b"precious")
        target = tmp_path / "link.pth"
        os.symlink(real, target)
    else:
        target = tmp_path / "pipe.pth"
        os.mkfifo(target)
    mode = os.lstat(target).st_mode
    before = digest(tmp_path)
    p = samfast("make-checkpoint", "--model", "tiny", "--out", target, "--overwrite")
    assert_refused(p, "refusing to write", str(target))
    assert os.lstat(target).st_mode == mode
    assert digest(tmp_path) == before


def test_segment_never_replaces_a_symlinked_output(samfast, tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    real = tmp_path / "real.png"
    real.write_bytes(b"not to be replaced")
    os.symlink(real, out / "mask_0.png")
    before = digest(tmp_path)
    p = samfast("segment", "--checkpoint", tiny, "--device", "cpu", "--image", IMAGES / "dog.jpg", "--point", "400,260",
                "--out", out, "--overwrite")
    assert_refused(p, "refusing to write", "symlink")
    assert digest(tmp_path) == before


# ---- two runs on one folder -------------------------------------------------------------------------

def test_a_second_run_on_the_same_folder_is_refused(samfast, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        small_jpeg(data / f"{i}.jpg", size=(96 + 8 * i, 64))
    out = tmp_path / "out"
    bin_ = Path(os.environ["SAMFAST_BIN"]) / "samfast"
    args = ["everything", "--checkpoint", str(tiny), "--device", "cpu", "--input", str(data), "--output", str(out), *FAST]
    first = subprocess.Popen([str(bin_), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the first run holds the folder, then freeze it there, so the second certainly
        # meets it (a real process, stopped, not a lock taken by the test).
        lock = out / ".samfast-lock"
        for _ in range(3000):
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            assert first.poll() is None, first.communicate()
            subprocess.run(["sleep", "0.01"])
        os.kill(first.pid, 19)  # SIGSTOP
        second = subprocess.run([str(bin_), *args], capture_output=True, text=True, timeout=60)
        assert_refused(second, "in use by another samfast run", f"pid {first.pid}")
    finally:
        os.kill(first.pid, 18)  # SIGCONT
    o, e = first.communicate(timeout=300)
    assert first.returncode == 0, e
    assert "3 done" in o
    assert sorted(os.listdir(out)) == ["0", "1", "2"]  # the lock is gone with its run


# ---- a full disk ------------------------------------------------------------------------------------

def in_small_filesystem(script, tmp_path):
    """Runs a shell script in a private mount namespace where $MNT is a tmpfs (removed with it);
    skips when this machine cannot make one."""
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a user namespace here: " + probe.stderr.strip())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return subprocess.run(["unshare", "-rm", "sh", "-ec", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MNT": str(mnt)})


def test_full_disk_everything_leaves_no_partial_output_and_resumes(samfast, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        small_jpeg(data / f"{i}.jpg", size=(160 + 16 * i, 120), src=["dog.jpg", "truck.jpg", "groceries.jpg"][i % 3])
    ref = tmp_path / "ref"
    p = run_everything(samfast, tiny, data, ref, "--overlay")
    assert p.returncode == 0, p.stderr
    total = sum(f.stat().st_size for f in ref.rglob("*") if f.is_file())
    bin_ = Path(os.environ["SAMFAST_BIN"]) / "samfast"
    cmd = f"{bin_} everything --checkpoint {tiny} --device cpu --input {data} --output $MNT/out --overlay " + " ".join(FAST)
    snap = tmp_path / "snap"
    # tmpfs counts whole pages: half the bytes the outputs need, in pages, fills up midway.
    size = max(8, total // 2 // 4096) * 4096
    script = f"""
mount -t tmpfs -o size={size} tmpfs $MNT
set +e; {cmd} > {tmp_path}/first.out 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc; set -e
cp -a $MNT/out {snap}
mount -o remount,size=64m $MNT
set +e; {cmd} > {tmp_path}/second.out 2> {tmp_path}/second.err; echo $? > {tmp_path}/second.rc; set -e
cp -a $MNT/out {tmp_path}/final
"""
    r = in_small_filesystem(script, tmp_path)
    assert r.returncode == 0, r.stderr
    first_err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first_err
    assert "No space left on device" in first_err
    # What the full disk let through is complete; what it stopped is absent, not partial.
    names = sorted(os.listdir(snap))
    assert not [n for n in names if n.startswith(".samfast")]
    ref_digest = digest(ref)
    done = [n for n in names if not n.endswith(".overlay.png")]
    assert len(done) < 6
    for n in done:
        assert {k: v for k, v in digest(snap / n).items()} == {k[len(n) + 1:]: v for k, v in ref_digest.items()
                                                                  if k.startswith(n + "/")}
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    assert f"{6 - len(done)} done, {len(done)} skipped" in (tmp_path / "second.out").read_text()
    assert digest(tmp_path / "final") == ref_digest


def test_full_disk_segment_changes_nothing(samfast, tiny, tmp_path):
    bin_ = Path(os.environ["SAMFAST_BIN"]) / "samfast"
    cmd = (f"{bin_} segment --checkpoint {tiny} --device cpu --image {IMAGES / 'dog.jpg'} --point 400,260 --multimask "
           f"--out $MNT/out")
    script = f"""
mount -t tmpfs -o size=32k tmpfs $MNT
set +e; {cmd} 2> {tmp_path}/err; echo $? > {tmp_path}/rc; set -e
ls -A $MNT/out > {tmp_path}/ls || true
"""
    r = in_small_filesystem(script, tmp_path)
    assert r.returncode == 0, r.stderr
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1"
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert (tmp_path / "ls").read_text() == ""  # no truncated mask, no 0-byte file, no temporary


# ---- resources and hangs ----------------------------------------------------------------------------

def pth_bytes(pickle_bytes, storages=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        for k, data in storages:
            z.writestr(f"archive/data/{k}", data)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def many_dims_pickle(entries=5000, dims=100_000):
    """A state_dict of `entries` names for one tensor with `dims` dimensions, memoised: under 1 MB on
    disk, gigabytes if every reference is expanded into its own description."""
    import collections
    import pickle

    import torch
    storage = object()

    class Tensor:  # pickles as torch.save pickles a tensor: _rebuild_tensor_v2 over a persistent storage
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2,
                    (storage, 0, (1,) * dims, (1,) * dims, False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 1) if obj is storage else None

    t = Tensor()
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(collections.OrderedDict((f"w{i}", t) for i in range(entries)))
    return buf.getvalue()


def test_a_checkpoint_that_asks_for_gigabytes_is_refused_in_bounded_memory(samfast, tmp_path):
    f = tmp_path / "bomb.pth"
    f.write_bytes(pth_bytes(many_dims_pickle(), [("0", b"\0" * 4)]))
    assert f.stat().st_size < 2_000_000

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: the unbounded loader took > 3 GB

    bin_ = Path(os.environ["SAMFAST_BIN"]) / "samfast"
    p = subprocess.run([str(bin_), "info", str(f)], capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
    line = assert_refused(p, str(f))
    assert "limit" in line or "dimensions" in line, line
    assert "bad_alloc" not in line


@pytest.mark.parametrize("what", ["checkpoint", "image", "mask-input"])
def test_a_fifo_as_input_is_refused_not_waited_on(samfast, tiny, tmp_path, what):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    args = {"checkpoint": ["info", fifo],
            "image": ["segment", "--checkpoint", tiny, "--image", fifo, "--point", "1,1", "--out", tmp_path / "o"],
            "mask-input": ["segment", "--checkpoint", tiny, "--image", IMAGES / "dog.jpg", "--point", "1,1",
                           "--mask-input", fifo, "--out", tmp_path / "o"]}[what]
    p = samfast(*args)  # the fixture's timeout turns a hang into a failure
    assert_refused(p, str(fifo), "FIFO", "not a regular file")
    assert not (tmp_path / "o").exists()


def test_everything_refuses_a_fifo_checkpoint_before_making_the_output_folder(samfast, tmp_path):
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    p = samfast("everything", "--checkpoint", fifo, "--input", IMAGES / "dog.jpg", "--output", tmp_path / "o")
    assert_refused(p, "not a regular file")
    assert not (tmp_path / "o").exists()


def test_too_many_crop_layers_are_refused_and_large_counts_announced(samfast, tiny, tmp_path):
    p = samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", IMAGES / "dog.jpg",
                "--output", tmp_path / "o", "--crop-n-layers", "8")
    assert_refused(p, "crop")
    assert "87381" in p.stderr  # the number of crops the option asks for
    assert not (tmp_path / "o").exists()
    img = tmp_path / "small.png"
    Image.open(IMAGES / "dog.jpg").resize((64, 48)).save(img)
    p = samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", img, "--output", tmp_path / "o2",
                "--crop-n-layers", "2", *FAST)
    assert p.returncode == 0, p.stderr
    assert "asks for 21 crops" in p.stderr


def test_a_symlink_loop_in_the_input_folder_is_reported_and_skipped(samfast, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    small_jpeg(data / "a.jpg")
    os.symlink("loop.jpg", data / "loop.jpg")
    small_jpeg(data / "z.jpg")
    p = run_everything(samfast, tiny, data, tmp_path / "out")
    assert p.returncode == 1
    assert "loop.jpg: FAILED" in p.stderr and "symbolic links" in p.stderr
    assert "2 done, 0 skipped (already done), 1 failed" in p.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["a", "z"]


def evil_pickle():
    """A pickle that would run a shell command under a plain pickle.load."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/samfast-pwned",))
    return pickle.dumps({"w": Evil()}, protocol=2)


def png_claiming(width, height):
    """A PNG header (valid CRC) announcing a huge image, with no pixel data to speak of."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case", ["evil_pickle", "truncated_checkpoint", "image_bomb", "truncated_image"])
def test_inputs_already_refused_stay_refused(samfast, tiny, tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    checkpoint, image = tiny, IMAGES / "dog.jpg"
    if case == "evil_pickle":
        checkpoint = work / "evil.pth"
        checkpoint.write_bytes(pth_bytes(evil_pickle()))
    elif case == "truncated_checkpoint":
        checkpoint = work / "cut.pth"
        checkpoint.write_bytes(Path(tiny).read_bytes()[: Path(tiny).stat().st_size // 2])
    elif case == "image_bomb":
        image = work / "bomb.png"
        image.write_bytes(png_claiming(100_000, 100_000))
    else:
        image = work / "cut.jpg"
        image.write_bytes((IMAGES / "dog.jpg").read_bytes()[:5000])
    before = digest(tmp_path)
    p = samfast("segment", "--checkpoint", checkpoint, "--device", "cpu", "--image", image, "--point", "1,1",
                "--out", tmp_path / "o")
    line = assert_refused(p, str(checkpoint if "checkpoint" in case or "pickle" in case else image))
    assert {"evil_pickle": "refusing to load", "truncated_checkpoint": "", "image_bomb": "more than the limit",
            "truncated_image": ""}[case] in line
    assert digest(tmp_path) == before
    assert not Path("/tmp/samfast-pwned").exists()


# ---- wrong results and unclear errors -----------------------------------------------------------------

def safetensors_bytes(tensors, header_extra=None):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors:
        b = arr.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if header_extra:
        header_extra(header)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def tiny_tensors(samfast, tmp_path):
    """The tiny synthetic model's tensors, read back through upstream's safetensors layout."""
    st = tmp_path / "tiny.safetensors"
    assert samfast("make-checkpoint", "--model", "tiny", "--seed", "1", "--out", st).returncode == 0
    raw = st.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = []
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        out.append((name, np.frombuffer(data[a:b], "<f4").reshape(h["shape"]).copy()))
    return out


def test_non_finite_weights_are_refused_with_the_tensor_named(samfast, tmp_path):
    tensors = tiny_tensors(samfast, tmp_path)
    name, arr = tensors[5]
    arr.flat[:3] = [np.nan, np.inf, -np.inf]
    f = tmp_path / "nan.safetensors"
    f.write_bytes(safetensors_bytes(tensors))
    p = samfast("segment", "--checkpoint", f, "--device", "cpu", "--image", IMAGES / "dog.jpg", "--point", "1,1",
                "--out", tmp_path / "o")
    assert_refused(p, name, "3 non-finite")
    assert not (tmp_path / "o").exists()


def test_overlapping_safetensors_offsets_are_refused(samfast, tmp_path):
    tensors = tiny_tensors(samfast, tmp_path)

    def overlap(header):
        names = list(header)
        header[names[1]]["data_offsets"] = header[names[0]]["data_offsets"]
    f = tmp_path / "overlap.safetensors"
    f.write_bytes(safetensors_bytes(tensors, overlap))
    assert_refused(samfast("info", f), str(f), "offset")


def test_control_characters_in_names_are_escaped(samfast, tmp_path):
    f = tmp_path / "evil.safetensors"
    f.write_bytes(safetensors_bytes([("x\n\x1b[31mred", np.zeros(2, np.float32))],
                                    lambda h: h["x\n\x1b[31mred"].update(dtype="F\x1b]0;pwned\x07")))
    p = samfast("info", f)
    assert_refused(p, str(f))
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr and "\\x1b" in p.stderr


def test_control_characters_in_image_names_are_escaped_in_the_report(samfast, tiny, tmp_path):
    """A name from a folder listing reaches the terminal escaped: it can neither recolour nor
    retitle it nor forge a report line; its output folder keeps the real name."""
    data = tmp_path / "data"
    data.mkdir()
    small_jpeg(data / "a\x1b[31mred.jpg")
    (data / "b\x1b]0;pwned\x07\nc.jpg").write_bytes(b"not a jpeg")  # a FAILED line names it too
    (data / "c\u009b31m.jpg").write_bytes(b"not a jpeg")  # C1 CSI, as UTF-8
    out = tmp_path / "out"
    p = run_everything(samfast, tiny, data, out)
    assert p.returncode == 1, (p.stdout, p.stderr)  # two unreadable images
    text = p.stdout + p.stderr
    for raw in ("\x1b", "\x07", "\u009b"):
        assert raw not in text, (raw, text)
    assert "a\\x1b[31mred.jpg" in p.stderr and "b\\x1b]0;pwned\\x07\\x0ac.jpg" in p.stderr, p.stderr
    assert "\\xc2\\x9b31m.jpg" in p.stderr, p.stderr
    assert len([l for l in p.stderr.splitlines() if "FAILED" in l]) == 2, p.stderr
    assert (out / "a\x1b[31mred").is_dir()


def npy_with_header(shape_text):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64


@pytest.mark.parametrize("shape", ["(1, -1, 256)", "(4294967296, 4294967296, 16)", "(99999999999999999999,)"])
def test_bad_npy_shapes_are_refused_before_the_model(samfast, tiny, tmp_path, shape):
    m = tmp_path / "m.npy"
    m.write_bytes(npy_with_header(shape))
    p = samfast("segment", "--checkpoint", tiny, "--device", "cpu", "--image", IMAGES / "dog.jpg", "--point", "1,1",
                "--mask-input", m, "--out", tmp_path / "o")
    assert_refused(p, str(m))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("shape", [(1, 128, 128), (4, 128, 128), (1, 64, 1024), (65536,)])  # (256 * 256 values but one)
def test_wrong_mask_input_shape_is_refused_before_the_model(samfast, tiny, tmp_path, shape):
    m = tmp_path / "m.npy"
    np.save(m, np.zeros(shape, np.float32))
    p = samfast("segment", "--checkpoint", tiny, "--device", "cpu", "--image", IMAGES / "dog.jpg", "--point", "1,1",
                "--mask-input", m, "--out", tmp_path / "o")
    assert_refused(p, "mask input must be (1, 256, 256)")
    assert not (tmp_path / "o").exists()


def test_png_with_a_bad_header_crc_is_refused(samfast, tiny, tmp_path):
    png = tmp_path / "bad.png"
    Image.open(IMAGES / "dog.jpg").resize((32, 24)).save(png)
    raw = bytearray(png.read_bytes())
    raw[29] ^= 0xFF  # IHDR's CRC: 8 signature + 8 length/type + 13 data bytes
    png.write_bytes(bytes(raw))
    p = samfast("segment", "--checkpoint", tiny, "--device", "cpu", "--image", png, "--point", "1,1", "--out", tmp_path / "o")
    assert_refused(p, str(png), "CRC")


def test_refused_runs_create_no_output_folder(samfast, tiny, tmp_path):
    out = tmp_path / "new" / "out"
    cases = [
        ["everything", "--checkpoint", tiny, "--input", IMAGES / "dog.jpg", "--output", out, "--crop-overlap-ratio", "1.5"],
        ["everything", "--checkpoint", tiny, "--input", tmp_path / "nothing-here", "--output", out],
        ["segment", "--checkpoint", tiny, "--image", IMAGES / "dog.jpg", "--point", "5000,1", "--out", out],
        ["segment", "--checkpoint", tiny, "--image", IMAGES / "dog.jpg", "--box", "10,10,5,5", "--out", out],
    ]
    for args in cases:
        p = samfast(*args)
        assert_refused(p)
        assert not (tmp_path / "new").exists(), args


def test_unwritable_output_is_refused_before_the_model(samfast, tiny, tmp_path):
    (tmp_path / "file").write_text("x")
    p = samfast("everything", "--checkpoint", tiny, "--input", IMAGES / "dog.jpg", "--output", tmp_path / "file" / "out")
    assert_refused(p, "is not a folder")


def test_command_line_mistakes(samfast, tmp_path):
    p = samfast("segmnet", "--image", "x")
    line = assert_refused(p, "unknown command 'segmnet'", status=2)
    assert "segment" in line and "everything" in line
    p = samfast("segment", "--image", IMAGES / "dog.jpg", "--point", "1e999,3", "--out", tmp_path / "o")
    assert_refused(p, "out of range")
    p = samfast("segment", "--image", IMAGES / "dog.jpg", "--point", "nan,3", "--out", tmp_path / "o")
    assert_refused(p, "not a finite number")
    p = samfast("segment", "--image", IMAGES / "dog.jpg", "--point", "1,3", "--out", "")
    assert_refused(p, "--out is empty: name a folder")  # (was "filesystem error: cannot make absolute path")
    for seed in ("-1", "99999999999999999999"):  # (the second once became 2^64-1 silently)
        p = samfast("make-checkpoint", "--model", "tiny", "--seed", seed, "--out", tmp_path / "x.pth")
        assert_refused(p, f"--seed: '{seed}' is not a whole number 0..2^64-1", status=2)
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("size,layers", [((1, 64), 0), ((1, 64), 1), ((64, 1), 1), ((1, 1), 1)])
def test_one_pixel_wide_images_with_crops(samfast, tiny, tmp_path, size, layers):
    img = tmp_path / "thin.png"
    Image.new("RGB", size, (200, 30, 30)).save(img)
    p = samfast("everything", "--checkpoint", tiny, "--device", "cpu", "--input", img, "--output", tmp_path / "o",
                "--crop-n-layers", str(layers), *FAST)
    assert "1x0" not in p.stderr and "0x1" not in p.stderr
    assert p.returncode in (0, 1), p.stderr
    if p.returncode == 1:  # refused for that image, saying why: too thin for the encoder or its crops
        assert "thin.png: FAILED" in p.stderr
        assert "too thin" in p.stderr or "use at most 0 crop layers" in p.stderr


# ---- EXIF orientation ---------------------------------------------------------------------------------

def jpeg_with_orientation(path, orientation, size=(120, 80)):
    im = Image.open(IMAGES / "truck.jpg").resize(size)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_opencv_or_ignored_like_pil(samfast, tiny, tmp_path, orientation):
    from PIL import ImageOps
    src = tmp_path / "o.jpg"
    jpeg_with_orientation(src, orientation)
    turned = np.array(ImageOps.exif_transpose(Image.open(src)).convert("RGB"))
    stored = np.array(Image.open(src).convert("RGB"))
    for flag, expect in (([], turned), (["--exif", "ignore"], stored)):
        out = tmp_path / ("o" + "".join(flag))
        p = samfast("segment", "--checkpoint", tiny, "--device", "cpu", "--image", src, "--point", "1,1", "--out", out,
                    *flag)
        assert p.returncode == 0, p.stderr
        assert json.loads((out / "result.json").read_text())["width"] == expect.shape[1]
        overlay = np.array(Image.open(out / "overlay.png"))
        assert overlay.shape == expect.shape
    try:
        import cv2
    except ImportError:
        return
    assert cv2.imread(str(src)).shape == turned.shape  # OpenCV (amg.py's reader) turns it too
