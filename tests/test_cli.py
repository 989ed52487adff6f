"""``progvc-lab`` in-process: encode -> info -> truncate -> decode, --force, and errors that speak.

A random tiny codec saved with ``Codec.save`` stands in for the shipped model (``--model m.pt``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from fractions import Fraction

import pytest
import torch

from progvc_lab import bitstream
from progvc_lab.cli import main
from progvc_lab.data import read_video, write_video

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

T, H, W = 4, 32, 48


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_tiny_codec(seed=0).save(d / "m.pt")
    make_tiny_codec(seed=1).save(d / "other.pt")
    write_video(d / "in.y4m", pattern_clip(T, H, W), fps=Fraction(25))
    assert main(["encode", str(d / "in.y4m"), "-o", str(d / "a.pgvc"), "--model", str(d / "m.pt")]) == 0
    return d


def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own checks (types, choices) exit with status 2
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def expect_error(capsys, match: str, *argv):
    """A user error: status 2, ONE line ``progvc-lab[ COMMAND]: error: ...`` containing ``match``."""
    rc, out, err = run(capsys, *argv)
    assert rc == 2, (out, err)
    assert re.match(r"progvc-lab( \w+)?: error: ", err), err
    assert match in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


# ---- the happy path --------------------------------------------------------------------------------------
def test_self_check_is_opt_in_and_progress_is_shown(files, capsys):
    rc, out, err = run(capsys, "encode", files / "in.y4m", "-o", files / "p.pgvc", "--model", files / "m.pt",
                       "--progress", "on")
    assert rc == 0 and "verified" not in out
    assert "encode" in err and f"{T}/{T}" in err  # tqdm's bar over frames, on stderr
    rc, out, err = run(capsys, "decode", files / "p.pgvc", "-o", files / "p.y4m", "--model", files / "m.pt",
                       "--progress", "on")
    assert rc == 0 and f"{T}/{T}" in err
    rc, out, err = run(capsys, "encode", files / "in.y4m", "-o", files / "q.pgvc", "--model", files / "m.pt",
                       "--verify", "--progress", "off")
    assert rc == 0 and "verified (decoded and compared)" in out and err == ""
    assert (files / "q.pgvc").read_bytes() == (files / "p.pgvc").read_bytes()
    assert not list(files.glob("*.part"))  # temporary files are renamed or removed


def test_encode_matches_the_python_api(files, capsys):
    rc, out, err = run(capsys, "encode", files / "in.y4m", "-o", files / "b.pgvc", "--model", files / "m.pt")
    assert rc == 0 and "bytes" in out and "bpp" in out and "frames/s" in out
    assert "GOP 32, copy gate context, lambda 0.005" in out
    video, fps = read_video(files / "in.y4m")
    # a loaded model codes with today's encoder defaults (GOP 32, copy gate, lambda), not the saved GOP 3
    assert (files / "b.pgvc").read_bytes() == make_tiny_codec(seed=0, gop=32, coding_threads=2).encode(video, fps)


@pytest.mark.parametrize("argv,expect", [
    (["--lambda", "0"], {"rdo_lambda": 0.0}),
    (["--lambda", "0.3", "--copy-gate", "none", "--gop", "2"], {"rdo_lambda": 0.3, "copy_gate": "none", "gop": 2}),
    (["--copy-gate", "context"], {"copy_gate": "context"}),
    (["--coder", "torchac", "--coding-threads", "1"], {"coder": "torchac", "coding_threads": 1}),
    (["--p-lambda-factor", "8"], {"rdo_p_factor": 8.0}),
])
def test_encode_options(files, capsys, argv, expect):
    out_file = files / f"opt_{'_'.join(argv).replace('-', '')}.pgvc"
    rc, out, _ = run(capsys, "encode", files / "in.y4m", "-o", out_file, "--model", files / "m.pt", "--force", *argv)
    assert rc == 0, out
    video, fps = read_video(files / "in.y4m")
    assert out_file.read_bytes() == make_tiny_codec(seed=0, gop=32, coding_threads=2).encode(video, fps, **expect)
    info = bitstream.describe(out_file.read_bytes())
    assert info["copy_gate"] == expect.get("copy_gate", "context")
    assert (info["coder"], info["coding_threads"]) == (expect.get("coder", "constriction"), expect.get("coding_threads", 2))


def test_encode_target(files, capsys):
    video, fps = read_video(files / "in.y4m")
    full = len(make_tiny_codec(seed=0, gop=32, coding_threads=2).encode(video, fps, rdo_lambda=0))
    budget = int(full * 0.7)
    rc, out, _ = run(capsys, "encode", files / "in.y4m", "-o", files / "target.pgvc", "--model", files / "m.pt",
                     "--target-bytes", budget, "--force")
    assert rc == 0 and "chose k = " in out and "lambda" in out
    assert len((files / "target.pgvc").read_bytes()) <= budget
    rc, out, _ = run(capsys, "encode", files / "in.y4m", "-o", files / "target2.pgvc", "--model", files / "m.pt",
                     "--target-bpp", budget * 8 / (T * H * W), "--force")
    assert rc == 0 and len((files / "target2.pgvc").read_bytes()) <= budget
    expect_error(capsys, "at most one of", "encode", files / "in.y4m", "-o", files / "x.pgvc", "--model",
                 files / "m.pt", "--lambda", 1, "--target-bytes", 100)
    expect_error(capsys, "--lambda must be", "encode", files / "in.y4m", "-o", files / "x.pgvc", "--model",
                 files / "m.pt", "--lambda", -1)
    expect_error(capsys, "--p-lambda-factor must be", "encode", files / "in.y4m", "-o", files / "x.pgvc", "--model",
                 files / "m.pt", "--p-lambda-factor", "nan")
    expect_error(capsys, "no stream fits", "encode", files / "in.y4m", "-o", files / "x.pgvc", "--model",
                 files / "m.pt", "--target-bytes", 5)


def test_info(files, capsys):
    rc, out, _ = run(capsys, "info", files / "a.pgvc")
    assert rc == 0
    for text in ("48x32", "6 of 6 sent", "progvc_sparse", "constriction", "GOP", "scale", "copy gate"):
        assert text in out, text
    rc, out, _ = run(capsys, "info", files / "a.pgvc", "--json")
    info = json.loads(out)
    assert info == bitstream.describe((files / "a.pgvc").read_bytes())
    assert (info["num_frames"], info["scales_sent"], info["gop"]) == (T, 6, 32)


def test_truncate_then_decode(files, capsys):
    a = files / "a.pgvc"
    rc, out, _ = run(capsys, "truncate", a, "-o", files / "t2.pgvc", "--scales", 2)
    assert rc == 0 and "kept 2 scales" in out
    cut = (files / "t2.pgvc").read_bytes()
    assert cut == bitstream.truncate(a.read_bytes(), 2)
    rc, out, _ = run(capsys, "info", files / "t2.pgvc", "--json")
    assert json.loads(out)["scales_sent"] == 2
    rc, out, _ = run(capsys, "decode", files / "t2.pgvc", "-o", files / "t2.y4m", "--model", files / "m.pt")
    assert rc == 0 and "2 of 6 scales" in out
    decoded, fps = read_video(files / "t2.y4m")
    assert decoded.shape == (T, 3, H, W) and fps == 25
    # the same as decoding 2 scales of the full stream
    rc, _, _ = run(capsys, "decode", a, "-o", files / "s2.y4m", "--model", files / "m.pt", "--scales", 2)
    assert rc == 0 and (files / "s2.y4m").read_bytes() == (files / "t2.y4m").read_bytes()


def test_decode_y4m_and_mp4(files, capsys):
    codec = make_tiny_codec(seed=0, gop=32)
    expect = codec.decode((files / "a.pgvc").read_bytes())
    rc, _, _ = run(capsys, "decode", files / "a.pgvc", "-o", files / "full.y4m", "--model", files / "m.pt")
    assert rc == 0
    write_video(files / "api.y4m", expect, fps=Fraction(25))
    assert (files / "full.y4m").read_bytes() == (files / "api.y4m").read_bytes()
    rc, _, _ = run(capsys, "decode", files / "a.pgvc", "-o", files / "full.mp4", "--model", files / "m.pt")
    assert rc == 0
    mp4, fps = read_video(files / "full.mp4")
    assert mp4.shape == (T, 3, H, W) and float(fps) == pytest.approx(25)
    # an mp4 is also accepted as encoder input
    rc, out, _ = run(capsys, "encode", files / "full.mp4", "-o", files / "from_mp4.pgvc", "--model", files / "m.pt",
                     "--frames", 2, "--gop", 2, "--verify")
    assert rc == 0 and "verified (decoded and compared)" in out
    info = bitstream.describe((files / "from_mp4.pgvc").read_bytes())
    assert (info["num_frames"], info["gop"]) == (2, 2)


def test_decode_samplers(files, capsys):
    outs = []
    for i, extra in enumerate([("--seed", 1), ("--seed", 1), ("--seed", 2)]):
        out = files / f"sample{i}.y4m"
        rc, _, _ = run(capsys, "decode", files / "a.pgvc", "-o", out, "--model", files / "m.pt", "--scales", 2,
                       "--sampler", "sample", "--top-k", 8, "--temperature", 0.8, *extra)
        assert rc == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    rc, _, _ = run(capsys, "decode", files / "a.pgvc", "-o", files / "argmax.y4m", "--model", files / "m.pt",
                   "--scales", 2, "--sampler", "argmax")
    assert rc == 0
    # per-scale temperatures and top-p reach the sampler: a near-zero temperature on every unsent scale
    # with top-p is the argmax fill, and "0.8,0.8" is the single value 0.8
    rc, _, _ = run(capsys, "decode", files / "a.pgvc", "-o", files / "cold.y4m", "--model", files / "m.pt",
                   "--scales", 2, "--sampler", "sample", "--temperature", "1,1,1e-4", "--top-p", 0.9, "--top-k", 0)
    assert rc == 0 and (files / "cold.y4m").read_bytes() == (files / "argmax.y4m").read_bytes()
    rc, _, _ = run(capsys, "decode", files / "a.pgvc", "-o", files / "list.y4m", "--model", files / "m.pt", "--scales", 2,
                   "--sampler", "sample", "--top-k", 8, "--temperature", "0.8,0.8", "--seed", 1)
    assert rc == 0 and (files / "list.y4m").read_bytes() == outs[0]


# ---- --force ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd,suffix", [("encode", ".pgvc"), ("truncate", ".pgvc"), ("decode", ".y4m")])
def test_outputs_are_not_replaced_without_force(files, capsys, cmd, suffix):
    target = files / f"existing_{cmd}{suffix}"
    target.write_bytes(b"precious")
    argv = {"encode": ["encode", files / "in.y4m", "--model", files / "m.pt"],
            "truncate": ["truncate", files / "a.pgvc", "--scales", 1],
            "decode": ["decode", files / "a.pgvc", "--model", files / "m.pt"]}[cmd]
    expect_error(capsys, "already exists; pass --force", *argv, "-o", target)
    assert target.read_bytes() == b"precious"
    rc, _, _ = run(capsys, *argv, "-o", target, "--force")
    assert rc == 0 and target.read_bytes() != b"precious"
    assert not target.with_name(target.name + ".part").exists()


# ---- errors ------------------------------------------------------------------------------------------------
def test_missing_files(files, capsys):
    missing = files / "nope.pgvc"
    expect_error(capsys, "no such file", "info", missing)
    expect_error(capsys, "no such file", "truncate", missing, "-o", files / "x.pgvc", "--scales", 1)
    expect_error(capsys, "no such file", "decode", missing, "-o", files / "x.y4m", "--model", files / "m.pt")
    expect_error(capsys, "no such file", "encode", files / "nope.y4m", "-o", files / "x.pgvc",
                 "--model", files / "m.pt")
    expect_error(capsys, "no model file at", "encode", files / "in.y4m", "-o", files / "x.pgvc",
                 "--model", files / "nope.pt")
    assert not (files / "x.pgvc").exists() and not (files / "x.y4m").exists()


def test_not_a_pgvc_file(files, capsys):
    expect_error(capsys, "not a .pgvc stream", "info", files / "in.y4m")
    expect_error(capsys, "not a .pgvc stream", "truncate", files / "in.y4m", "-o", files / "x.pgvc", "--scales", 1)
    expect_error(capsys, "not a .pgvc stream", "decode", files / "in.y4m", "-o", files / "x.y4m",
                 "--model", files / "m.pt")


def test_not_a_video_and_not_a_model(files, capsys):
    (files / "junk.y4m").write_bytes(b"this is not a video\n" * 10)
    expect_error(capsys, "junk.y4m", "encode", files / "junk.y4m", "-o", files / "x.pgvc", "--model", files / "m.pt")
    expect_error(capsys, "not a progvc_lab codec checkpoint", "encode", files / "in.y4m", "-o", files / "x.pgvc",
                 "--model", files / "junk.y4m")


def test_wrong_model(files, capsys):
    expect_error(capsys, "model mismatch", "decode", files / "a.pgvc", "-o", files / "x.y4m",
                 "--model", files / "other.pt")
    assert not (files / "x.y4m").exists()


def test_damaged_streams(files, capsys):
    data = (files / "a.pgvc").read_bytes()
    (files / "cut.pgvc").write_bytes(data[:-3])
    expect_error(capsys, "strict: cut streams are refused", "decode", files / "cut.pgvc", "-o", files / "x.y4m", "--model",
                 files / "m.pt", "--strict")
    info = bitstream.describe(data)
    (files / "cut0.pgvc").write_bytes(data[:info["header_bytes"] + info["table_bytes"]])
    expect_error(capsys, "cut right after its chunk table", "info", files / "cut0.pgvc")
    expect_error(capsys, "no scale of any GOP is complete", "decode", files / "cut0.pgvc", "-o", files / "x.y4m",
                 "--model", files / "m.pt")
    bad = bytearray(data)
    bad[21] ^= 0xFF
    (files / "bad.pgvc").write_bytes(bytes(bad))
    expect_error(capsys, "corrupted", "decode", files / "bad.pgvc", "-o", files / "x.y4m", "--model", files / "m.pt")


def test_boundary_cut_decodes_with_a_warning(files, capsys):
    data = (files / "a.pgvc").read_bytes()
    info = bitstream.describe(data)
    end = info["header_bytes"] + info["table_bytes"] + sum(info["bytes_per_scale"][:3])
    (files / "cut3.pgvc").write_bytes(data[:end])
    rc, out, err = run(capsys, "decode", files / "cut3.pgvc", "-o", files / "cut3.y4m", "--model", files / "m.pt")
    assert rc == 0 and "3 of 6 scales" in out
    assert err.count("progvc-lab: warning: stream was cut after scale 3") == 1, err


def test_cut_inside_a_scale_is_salvaged_and_reported(files, capsys):
    data = (files / "a.pgvc").read_bytes()
    (files / "cut.pgvc").write_bytes(data[:-3])
    rc, out, err = run(capsys, "decode", files / "cut.pgvc", "-o", files / "cut.y4m", "--model", files / "m.pt")
    assert rc == 0 and "scales decoded" in out, (out, err)
    assert err.count("progvc-lab: warning: stream was cut after scale 5 of 6") == 1 and "dropped" in err, err
    assert read_video(files / "cut.y4m")[0].shape[0] == bitstream.describe(data)["num_frames"]
    rc, out, _ = run(capsys, "info", files / "cut.pgvc")
    assert rc == 0 and "integrity" in out and "cut after scale 5" in out


def test_decode_limits(files, capsys):
    expect_error(capsys, "over the decoder's limit max_pixels=1,000", "decode", files / "a.pgvc", "-o",
                 files / "x.y4m", "--model", files / "m.pt", "--limit", "max_pixels=1000")
    expect_error(capsys, "unknown limit 'max_pix'", "decode", files / "a.pgvc", "-o", files / "x.y4m",
                 "--limit", "max_pix=5")
    expect_error(capsys, "--limit takes NAME=N", "decode", files / "a.pgvc", "-o", files / "x.y4m",
                 "--limit", "max_pixels")


def test_odd_frame_sizes_are_padded_for_output(files, capsys, tmp_path):
    # the Python API codes any size; 4:2:0 files need even sizes, so decode repeats the last row/column
    (tmp_path / "odd.pgvc").write_bytes(make_tiny_codec(seed=0).encode(pattern_clip(2, 37, 53)))
    rc, _, err = run(capsys, "decode", tmp_path / "odd.pgvc", "-o", tmp_path / "odd.y4m", "--model", files / "m.pt")
    assert rc == 0 and "53x37 is odd; padded to 54x38" in err
    assert read_video(tmp_path / "odd.y4m")[0].shape == (2, 3, 38, 54)


def test_bad_values(files, capsys):
    expect_error(capsys, "cannot keep 9 scales", "truncate", files / "a.pgvc", "-o", files / "x.pgvc", "--scales", 9)
    expect_error(capsys, "cannot decode 7 scales", "decode", files / "a.pgvc", "-o", files / "x.y4m",
                 "--model", files / "m.pt", "--scales", 7)
    expect_error(capsys, "temperature", "decode", files / "a.pgvc", "-o", files / "x.y4m", "--model", files / "m.pt",
                 "--sampler", "sample", "--temperature", 0)
    expect_error(capsys, ".y4m or .mp4", "decode", files / "a.pgvc", "-o", files / "x.avi", "--model", files / "m.pt")
    expect_error(capsys, "--gop", "encode", files / "in.y4m", "-o", files / "x.pgvc", "--model", files / "m.pt",
                 "--gop", 70000)
    for argv in (["truncate", files / "a.pgvc", "-o", files / "x.pgvc", "--scales", -1],
                 ["decode", files / "a.pgvc", "-o", files / "x.y4m", "--sampler", "blur"],
                 ["encode", files / "in.y4m", "-o", files / "x.pgvc", "--frames", 0],
                 ["frobnicate"], []):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2
    assert "progvc-lab" in capsys.readouterr().err


def test_debug_shows_the_exception(files):
    (files / "junk.bin").write_bytes(b"neither a stream nor a video")
    with pytest.raises(bitstream.BitstreamError, match="not a .pgvc stream"):
        main(["--debug", "info", str(files / "junk.bin")])


def test_info_and_truncate_do_not_load_torch(files):
    code = ("import sys; from progvc_lab.cli import main; "
            f"assert main(['info', {str(files / 'a.pgvc')!r}]) == 0; "
            f"assert main(['truncate', {str(files / 'a.pgvc')!r}, '-o', {str(files / 'light.pgvc')!r}, "
            "'--scales', '1', '--force']) == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_train_delegates(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("progvc_lab.training.cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "progvc_lab.training.cli", fake)
    assert main(["train", "stage1", "--config", "c.yaml", "--help"]) == 0
    assert seen == [["stage1", "--config", "c.yaml", "--help"]]


# ---- demo, eval, bench ------------------------------------------------------------------------------------
def test_demo_eval_bench(files, capsys, tmp_path):
    rc, out, _ = run(capsys, "demo", "--model", files / "m.pt", "--clip", files / "in.y4m", "--out", tmp_path / "demo")
    assert rc == 0
    for name in ("rd_curve.png", "frames_by_k.png", "results.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(res) >= {"name", "description", "results"}
    assert len(res["results"]["bpp"]) == len(res["results"]["psnr-rgb"]) == 6
    assert res["results"]["bpp"] == sorted(res["results"]["bpp"])
    assert "PSNR-YUV" in out and "unigram" in out
    # the demo's own folder: a second run replaces its files
    assert run(capsys, "demo", "--model", files / "m.pt", "--clip", files / "in.y4m", "--out", tmp_path / "demo",
               "--frames", 2)[0] == 0

    rc, out, _ = run(capsys, "eval", "--model", files / "m.pt", "--clips", files / "in.y4m", "--out", tmp_path / "ev")
    assert rc == 0
    assert json.loads((tmp_path / "ev" / "in.json").read_text())["results"]["bpp"] == res["results"]["bpp"]
    assert (tmp_path / "ev" / "rd.png").is_file()
    doc = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [r["codec"] for r in doc["clips"][0]["codecs"]] == ["ours", "ours", "x264", "x265"]
    assert doc["clips"][0]["codecs"][1]["ladder"] == "lambda"
    expect_error(capsys, "no such clip", "eval", "--model", files / "m.pt", "--clips", files / "nope.y4m")

    rc, out, _ = run(capsys, "bench", files / "in.y4m", "--model", files / "m.pt", "--threads", 1,
                     "--json", tmp_path / "bench.json")
    assert rc == 0
    for text in ("frames/s", "transformer (block_logits)", "arithmetic coding", "conv decoder", "overhead per call",
                 "with --verify", "real time", "per GOP", "decode at every k", "k=1:", "k=6:", "by scale:  s=0:"):
        assert text in out, text
    assert torch.get_num_threads() == 1  # bench restores the thread setting
    doc = json.loads((tmp_path / "bench.json").read_text())
    (r,) = doc["runs"]
    assert [p["k"] for p in r["per_k"]] == list(range(1, 7))
    assert [p["bytes"] for p in r["per_k"]] == sorted(p["bytes"] for p in r["per_k"])
    assert r["transformer_calls_per_gop"] == T * 6  # one GOP of T frames x 6 scales, one call per block
    assert r["realtime_factor"] == pytest.approx(r["decode_fps"] / 25)
    # then the variants: a model file is its own mask and quantizer group; both coders, every sampler
    for text in ("== variants", "bits per token by scale", "-- entropy coders", "-- detail samplers"):
        assert text in out, text
    v = doc["variants"]
    assert list(v["models"]) == [str(files / "m.pt")]
    assert set(v["coders"]) == {"torchac", "constriction"} and all(o["round_trip_every_k"] for o in v["coders"].values())
    assert len(v["samplers"]["samplers"]) == 5
    expect_error(capsys, "exists", "bench", files / "in.y4m", "--model", files / "m.pt", "--json", tmp_path / "bench.json")
    # narrowed: only the coders, no speed part
    rc, out, _ = run(capsys, "bench", files / "in.y4m", "--model", files / "m.pt", "--no-speed", "--variants", "coders",
                     "--coders", "constriction", "--json", tmp_path / "coders.json", "--plot", tmp_path / "c.png")
    assert rc == 0 and "frames/s (" not in out and "-- entropy coders" in out
    assert (tmp_path / "c.png").stat().st_size > 0
    expect_error(capsys, "--plot", "bench", files / "in.y4m", "--variants", "none", "--plot", tmp_path / "n.png")
    doc = json.loads((tmp_path / "coders.json").read_text())
    assert doc["kinds"] == ["coders"] and list(doc["coders"]) == ["constriction"]
    expect_error(capsys, "unknown kind 'mask'", "bench", files / "in.y4m", "--variants", "mask")
    expect_error(capsys, "unknown sampler 'blur'", "bench", files / "in.y4m", "--model", files / "m.pt", "--no-speed",
                 "--variants", "samplers", "--samplers", "blur")


def test_bench_scaling_runs_each_point_in_its_own_process(files, capsys, tmp_path):
    from progvc_lab.bench import run_scaling

    lines = []
    doc = run_scaling(files / "m.pt", files / "in.y4m", frames=(2, 5), sizes=((48, 32), (64, 48)), threads=1,
                      log=lines.append)
    assert [(p["frames"], p["width"], p["height"]) for p in doc["points"]] == [(2, 48, 32), (5, 48, 32), (2, 64, 48)]
    for p in doc["points"]:
        assert p["peak_rss_mib"] >= p["rss_after_load_mib"] > 0 and p["bytes"] > 0
    s = doc["summary"]
    assert s["frames"] == [2, 5] and s["peak_memory_ratio"] > 0 and set(s["ms_per_frame_per_megapixel"]) == {"48x32", "64x48"}
    assert "peak memory x" in "\n".join(lines)


def test_high_frame_rates_fit_the_header(files, capsys, tmp_path):
    # the header stores fps as two u16: 120000/1001 is replaced by the closest fraction that fits
    write_video(tmp_path / "fast.y4m", pattern_clip(2, H, W), fps=Fraction(120000, 1001))
    rc, _, _ = run(capsys, "encode", tmp_path / "fast.y4m", "-o", tmp_path / "fast.pgvc", "--model", files / "m.pt")
    assert rc == 0
    num, den = map(int, bitstream.describe((tmp_path / "fast.pgvc").read_bytes())["fps"].split("/"))
    assert num / den == pytest.approx(120000 / 1001, rel=1e-5)


# ---- bad files and arguments: one line naming the file and the problem, status 2 ----------------------------
def _y4m(path, header: bytes, payload: bytes = b"", frames: int = 1):
    path.write_bytes(header + (b"FRAME\n" + payload) * frames)
    return path


@pytest.fixture(scope="module")
def bad(files):
    d = files / "bad"
    d.mkdir()
    (d / "folder").mkdir()
    (d / "text.mp4").write_text("hello, not a video")
    (d / "text.y4m").write_text("hello, not a video\n")
    (d / "notes.txt").write_text("plain text")
    _y4m(d / "c411.y4m", b"YUV4MPEG2 W8 H4 F25:1 C411\n", bytes(64))
    _y4m(d / "zero.y4m", b"YUV4MPEG2 W8 H4 F25:1 C420jpeg\n", frames=0)
    full = (files / "in.y4m").read_bytes()
    (d / "cut.y4m").write_bytes(full[:-100])
    _y4m(d / "one.y4m", b"YUV4MPEG2 W1 H1 F25:1 Cmono\n", bytes(1))
    _y4m(d / "huge.y4m", b"YUV4MPEG2 W40000 H40000 F25:1 C420jpeg\n", bytes(64))
    return d


@pytest.mark.parametrize("name,match", [
    ("missing.y4m", "missing.y4m: no such file"),
    ("folder", "folder is a folder, expected a video file"),
    ("text.mp4", "text.mp4: FFmpeg (through PyAV) cannot open this file"),
    ("notes.txt", "notes.txt: FFmpeg (through PyAV) cannot open this file"),
    ("text.y4m", "text.y4m: not a YUV4MPEG2 file"),
    ("c411.y4m", "c411.y4m: y4m colour space C411 is not supported"),
    ("zero.y4m", "zero.y4m: the y4m file holds no complete frame"),
    ("cut.y4m", "cut.y4m: the file ends inside frame 3 (truncated?): it holds 3 complete frames"),
    ("one.y4m", "one.y4m: frame size 1x1 is too small; the codec needs at least 2x2 pixels"),
    ("huge.y4m", "huge.y4m: frame size 40000x40000 exceeds the limit of 16384 pixels per side"),
])
def test_encode_refuses_bad_inputs(files, bad, capsys, name, match):
    expect_error(capsys, match, "encode", bad / name, "-o", files / "bad_out.pgvc", "--model", files / "m.pt")
    assert not (files / "bad_out.pgvc").exists()


def test_unreadable_input(files, capsys, monkeypatch):
    import builtins

    real_open = builtins.open

    def no_read(path, *a, **kw):
        if str(path).endswith("in.y4m"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)
    monkeypatch.setattr(builtins, "open", no_read)
    expect_error(capsys, "in.y4m: permission denied", "encode", files / "in.y4m", "-o", files / "x.pgvc",
                 "--model", files / "m.pt")


def test_4_2_2_input_is_converted_with_a_note(files, capsys, tmp_path):
    from progvc_lab.data import read_y4m

    v = read_y4m(files / "in.y4m")
    import numpy as np

    u, w = np.repeat(v.u, 2, axis=1), np.repeat(v.v, 2, axis=1)
    body = b"".join(b"FRAME\n" + v.y[t].tobytes() + u[t].tobytes() + w[t].tobytes() for t in range(v.num_frames))
    src = tmp_path / "c422.y4m"
    src.write_bytes(f"YUV4MPEG2 W{W} H{H} F25:1 Ip C422\n".encode() + body)
    rc, out, err = run(capsys, "encode", src, "-o", tmp_path / "o.pgvc", "--model", files / "m.pt")
    assert rc == 0 and "progvc-lab: warning: " in err and "4:2:2 chroma" in err and "converted to 4:2:0" in err
    assert (tmp_path / "o.pgvc").read_bytes() == (files / "a.pgvc").read_bytes()  # the same 4:2:0 picture


def test_wrong_kind_of_file_for_the_command(files, bad, capsys):
    expect_error(capsys, "a.pgvc is a .pgvc stream, not a video (did you mean 'progvc-lab decode'?)",
                 "encode", files / "a.pgvc", "-o", files / "x.pgvc", "--model", files / "m.pt")
    for cmd in (["decode", files / "in.y4m", "-o", files / "x.y4m", "--model", files / "m.pt"],
                ["info", files / "in.y4m"], ["truncate", files / "in.y4m", "-o", files / "x.pgvc", "--scales", 1]):
        expect_error(capsys, "in.y4m is a y4m video, not a .pgvc stream (did you mean 'progvc-lab encode'?)", *cmd)
    for cmd in (["decode", files / "bad", "-o", files / "x.y4m"], ["info", files / "bad"]):
        expect_error(capsys, f"{bad} is a folder, expected a .pgvc stream", *cmd)


def test_outputs_in_a_missing_folder_or_onto_a_folder(files, bad, capsys):
    for cmd in (["encode", files / "in.y4m", "--model", files / "m.pt"],
                ["decode", files / "a.pgvc", "--model", files / "m.pt"], ["truncate", files / "a.pgvc", "--scales", 1]):
        suffix = ".y4m" if cmd[0] == "decode" else ".pgvc"
        target = files / "no_such_dir" / f"x{suffix}"
        expect_error(capsys, f"the output folder {files / 'no_such_dir'} does not exist; create it first",
                     *cmd, "-o", target)
        assert not (files / "no_such_dir").exists()
        expect_error(capsys, f"{files / 'bad'} is a folder; give a file name after -o", *cmd, "-o", files / "bad",
                     "--force")


@pytest.mark.parametrize("argv,match", [
    (["--scales", "0"], "--scales must be at least 1, got 0"),
    (["--scales", "-2"], "--scales must be at least 1, got -2"),
    (["--scales", "two"], "--scales must be an integer, got 'two'"),
    (["--scales", "7"], "a.pgvc: cannot decode 7 scales: the stream carries 6 of 6"),
    (["--sampler", "magic"], "argument --sampler: invalid choice: 'magic'"),
    (["--sampler", "sample", "--temperature", "nan"], "--temperature must be a finite number > 0, got 'nan'"),
    (["--sampler", "sample", "--temperature", "inf"], "--temperature must be a finite number > 0, got 'inf'"),
    (["--top-k", "-1"], "--top-k must be at least 0, got -1"),
    (["--sampler", "sample", "--temperature", "0.8,0"], "--temperature must be a finite number > 0, got '0'"),
    (["--sampler", "sample", "--temperature", "0.8,"], "--temperature must be a number, got ''"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got '0'"),
    (["--top-p", "1.2"], "--top-p must be in (0, 1], got '1.2'"),
])
def test_decode_refuses_bad_arguments(files, capsys, argv, match):
    expect_error(capsys, match, "decode", files / "a.pgvc", "-o", files / "bad_arg.y4m", "--model", files / "m.pt",
                 *argv)
    assert not (files / "bad_arg.y4m").exists()


@pytest.mark.parametrize("k,match", [("0", "--scales must be at least 1, got 0"),
                                     ("9", "cannot keep 9 scales: the stream has 6"),
                                     ("1.5", "--scales must be an integer, got '1.5'")])
def test_truncate_refuses_bad_scales(files, capsys, k, match):
    expect_error(capsys, match, "truncate", files / "a.pgvc", "-o", files / "t_bad.pgvc", "--scales", k)


@pytest.mark.parametrize("argv,match", [(["--lambda", "nan"], "--lambda must be a finite number >= 0, got 'nan'"),
                                        (["--target-bpp", "0"], "--target-bpp must be a finite number > 0"),
                                        (["--gop", "0"], "--gop must be at least 1, got 0"),
                                        (["--frames", "x"], "--frames must be an integer, got 'x'")])
def test_encode_refuses_bad_arguments(files, capsys, argv, match):
    expect_error(capsys, match, "encode", files / "in.y4m", "-o", files / "x.pgvc", "--model", files / "m.pt", *argv)


def test_info_into_a_closed_pipe_exits_quietly(files):
    """``progvc-lab info --json a.pgvc | head``: the reader is gone before we write (no traceback)."""
    import os

    r, w = os.pipe()
    os.close(r)  # nobody will ever read: the first write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "progvc_lab.cli", "info", "--json", str(files / "a.pgvc")],
                          stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_two_writers_of_one_new_output_cannot_both_succeed(files, tmp_path):
    from progvc_lab.cli import _publish, _temporary_name

    target = tmp_path / "same.pgvc"
    first, second = _temporary_name(target), _temporary_name(target)
    assert first != second  # unique temporary names: the two runs never write into one file
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    _publish(first, target, force=False)
    with pytest.raises(FileExistsError, match="already exists"):
        _publish(second, target, force=False)
    assert target.read_bytes() == b"first" and not first.exists() and not second.exists()
    # two real processes racing for the same new name: exactly one wins
    cmd = [sys.executable, "-m", "progvc_lab.cli", "truncate", str(files / "a.pgvc"), "-o", str(tmp_path / "race.pgvc"),
           "--scales", "2"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    assert "already exists" in next(err for rc, err in results if rc == 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.pgvc", "same.pgvc"]  # no temporary left


def test_decode_writes_through_a_temporary_file(files, capsys, monkeypatch, tmp_path):
    from progvc_lab.data import streaming

    seen = []
    real = streaming.VideoWriter.write

    def failing(self, frames):
        seen.append(self.tmp)
        real(self, frames)
        raise OSError(28, "No space left on device", str(self.tmp))
    monkeypatch.setattr(streaming.VideoWriter, "write", failing)
    out = tmp_path / "d.y4m"
    expect_error(capsys, "No space left on device", "decode", files / "a.pgvc", "-o", out, "--model", files / "m.pt")
    assert seen and seen[0] != out and seen[0].parent == out.parent
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary file is left


def test_internal_bugs_are_not_disguised_as_user_errors(files, capsys, monkeypatch):
    import progvc_lab.cli as cli

    def bug(args):
        import torch
        torch.zeros(2, 3) @ torch.zeros(2, 3)  # a RuntimeError from inside torch
    monkeypatch.setattr(cli, "cmd_info", bug)
    with pytest.raises(RuntimeError):
        main(["info", str(files / "a.pgvc")])
    assert "internal error (a bug, not a problem with your input" in capsys.readouterr().err

    import numpy as np

    def numpy_value_error(args):
        np.zeros(2).reshape(3)
    monkeypatch.setattr(cli, "cmd_info", numpy_value_error)
    with pytest.raises(ValueError):  # a ValueError from numpy's code, not ours: a bug, with its traceback
        main(["info", str(files / "a.pgvc")])


def test_version(capsys):
    import progvc_lab

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"progvc-lab {progvc_lab.__version__}"


def test_encode_scales_and_a_mask_that_is_not_truncation_safe(files, capsys):
    """`encode --scales k`: a safe model writes the full stream cut after k; a `var` model codes for
    exactly k scales, decodes at k, and `truncate` / `decode --scales` refuse it with one clear line."""
    rc, _, _ = run(capsys, "encode", files / "in.y4m", "-o", files / "k3.pgvc", "--model", files / "m.pt", "--scales", 3)
    assert rc == 0 and (files / "k3.pgvc").read_bytes() == bitstream.truncate((files / "a.pgvc").read_bytes(), 3)
    make_tiny_codec(seed=0, mask="var").save(files / "var.pt")
    rc, out, _ = run(capsys, "encode", files / "in.y4m", "-o", files / "var3.pgvc", "--model", files / "var.pt",
                     "--scales", 3, "--verify")
    assert rc == 0 and "verified" in out
    rc, out, _ = run(capsys, "info", files / "var3.pgvc")
    assert rc == 0 and "not truncation safe: decodes at exactly 3 scales" in out
    rc, out, _ = run(capsys, "decode", files / "var3.pgvc", "-o", files / "var3.y4m", "--model", files / "var.pt")
    assert rc == 0 and "3 of 6 scales" in out
    expect_error(capsys, "not truncation safe", "truncate", files / "var3.pgvc", "-o", files / "var2.pgvc", "--scales", 2)
    expect_error(capsys, "decodes only at the 3 scales", "decode", files / "var3.pgvc", "-o", files / "var2.y4m",
                 "--model", files / "var.pt", "--scales", 2)
    expect_error(capsys, "--scales and --target-bpp", "encode", files / "in.y4m", "-o", files / "x.pgvc",
                 "--model", files / "m.pt", "--scales", 2, "--target-bpp", 0.1)
    expect_error(capsys, "scales must be an integer in 1..6", "encode", files / "in.y4m", "-o", files / "x.pgvc",
                 "--model", files / "m.pt", "--scales", 9)


def test_encode_with_a_learned_gate_model(files, capsys, tmp_path):
    """A model with a gate head codes with the learned gate on request (the default, auto, is the context
    gate for every model); a model without one refuses --copy-gate learned in one line, naming the way out."""
    gated = tmp_path / "gated.pt"
    make_tiny_codec(seed=0, gate_head=True).save(gated)
    video, fps = read_video(files / "in.y4m")
    for argv in ([], ["--copy-gate", "learned"], ["--copy-gate", "auto"]):
        out_file = tmp_path / f"g{len(argv)}_{'_'.join(argv)}.pgvc"
        rc, out, _ = run(capsys, "encode", files / "in.y4m", "-o", out_file, "--model", gated, *argv)
        assert rc == 0, out
        assert bitstream.describe(out_file.read_bytes())["copy_gate"] == ("learned" if "learned" in argv else "context")
        rc, out, _ = run(capsys, "decode", out_file, "-o", tmp_path / f"{out_file.stem}.y4m", "--model", gated)
        assert rc == 0, out
    assert (tmp_path / "g0_.pgvc").read_bytes() == make_tiny_codec(seed=0, gop=32, coding_threads=2,
                                                                    gate_head=True).encode(video, fps)
    rc, out, err = run(capsys, "encode", files / "in.y4m", "-o", tmp_path / "no.pgvc", "--model", files / "m.pt",
                       "--copy-gate", "learned")
    assert rc != 0 and "gate head" in (out + err) and "Traceback" not in (out + err)
    assert not (tmp_path / "no.pgvc").exists()


def test_model_help_names_every_shipped_model(capsys):
    from progvc_lab.codec import PRETRAINED

    rc, out, _ = run(capsys, "encode", "--help")
    assert rc == 0
    text = "".join(out.split())      # argparse wraps lines, at hyphens too
    assert all(name in text for name in PRETRAINED), [n for n in PRETRAINED if n not in text]
