"""The coding path's global torch settings: serialised across threads, restored exactly, and the same
tokens in another process with another thread count.

``codec.deterministic`` sets two process-wide torch settings (intra-op threads, deterministic kernels).
Two codecs coding in threads of one process must neither see each other's settings in the middle of
coding nor leave the process with settings nobody asked for.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from progvc_lab.codec import CodecError, deterministic

from helpers import make_tiny_codec, one_thread, pattern_clip  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _record_settings(codec, seen: list):
    """Record (threads, deterministic) at every module call of the codec, i.e. inside the coding path."""
    def hook(module, args):
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
    return [m.register_forward_pre_hook(hook) for m in codec.modules()]


def test_two_codecs_in_threads_keep_their_settings_and_restore_the_callers(one_thread):
    clip = pattern_clip(3, 32, 48)
    codecs = {1: make_tiny_codec(seed=0, coding_threads=1), 2: make_tiny_codec(seed=0, coding_threads=2)}
    serial = {n: c.encode(clip, rdo_lambda=0) for n, c in codecs.items()}
    seen = {n: [] for n in codecs}
    hooks = [_record_settings(c, seen[n]) for n, c in codecs.items()]
    results, errors = {n: [] for n in codecs}, []
    start = threading.Barrier(len(codecs))

    def work(n):
        try:
            start.wait()
            for _ in range(3):
                data = codecs[n].encode(clip, rdo_lambda=0)
                tokens, _ = codecs[n].decode_tokens(data)
                results[n].append(data)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    torch.use_deterministic_algorithms(False)
    threads = [threading.Thread(target=work, args=(n,)) for n in codecs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in sum(hooks, []):
        h.remove()
    assert not errors, errors
    # the caller's settings, exactly: one thread (the fixture's) and no deterministic kernels
    assert torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled()
    for n in codecs:
        assert seen[n] and set(seen[n]) == {(n, True)}, f"codec with {n} threads coded under {set(seen[n])}"
        assert results[n] == [serial[n]] * 3


def test_nested_sections_restore_the_outer_settings_and_warn_only_is_kept(one_thread):
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with deterministic(2):
            assert torch.get_num_threads() == 2
            with deterministic(1):
                assert torch.get_num_threads() == 1
                assert not torch.is_deterministic_algorithms_warn_only_enabled()
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(CodecError, match="coding_threads must be an integer >= 1"):
        with deterministic(bad):
            pass


DECODE_ELSEWHERE = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[3]))
    from progvc_lab.codec import Codec
    codec = Codec.load(sys.argv[1])
    tokens, _ = codec.decode_tokens(open(sys.argv[2], "rb").read())
    assert torch.get_num_threads() == int(sys.argv[3])
    torch.save([t.clone() for t in tokens], sys.argv[2] + ".tokens")
""")


def test_a_separate_process_with_another_thread_count_decodes_the_same_tokens(tmp_path, one_thread):
    codec = make_tiny_codec(seed=3)
    codec.save(tmp_path / "m.pt")
    data, stats = codec.encode_with_stats(pattern_clip(4, 32, 48))
    (tmp_path / "s.pgvc").write_bytes(data)
    script = tmp_path / "decode.py"
    script.write_text(DECODE_ELSEWHERE)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    import os
    env = dict(os.environ, **env)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "m.pt"), str(tmp_path / "s.pgvc"), "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = torch.load(tmp_path / "s.pgvc.tokens", weights_only=True)
    assert len(theirs) == len(stats["tokens"])
    assert all(torch.equal(a, b) for a, b in zip(theirs, stats["tokens"]))
