"""``progvc-lab bench``'s comparison of the shipped variants (progvc_lab.bench_variants)."""
from __future__ import annotations

import pytest
import torch

from progvc_lab import bench_variants as bv
from progvc_lab.codec import Codec
from progvc_lab.data import sample_clip_path

FRAMES = 3


def test_parse_kinds():
    assert bv.parse_kinds(None) == bv.parse_kinds("all") == bv.KINDS
    assert bv.parse_kinds("none") == ()
    assert bv.parse_kinds("coders, samplers") == ("coders", "samplers")
    with pytest.raises(bv.VariantError, match="unknown kind 'mask'"):
        bv.parse_kinds("mask")


def test_shipped_variants_are_read_from_the_models():
    groups = bv.shipped_variants("tiny")
    assert groups["masks"] == ["tiny", "tiny-var", "tiny-infinitystar", "tiny-sparse-parent"]
    assert groups["quantizers"] == ["tiny", "tiny-bsq"]
    # relative to another base, tiny is the variant
    # (tiny-gate too: tiny's tokenizer, quantizer and mask, its context model with a gate head)
    assert bv.shipped_variants("tiny-bsq")["quantizers"] == ["tiny-bsq", "tiny", "tiny-gate"]
    assert bv.shipped_variants("tiny-bsq")["masks"] == ["tiny-bsq"]
    # tiny-fast has another decoder (decoder_width): a variant of neither kind
    assert bv.shipped_variants("tiny-fast") == {"masks": ["tiny-fast"], "quantizers": ["tiny-fast"]}
    # tiny-gate and tiny-lite keep tiny's mask and quantizer: no mask or quantizer variants of tiny
    assert bv.shipped_variants("tiny-lite") == {"masks": ["tiny-lite"], "quantizers": ["tiny-lite"]}
    with pytest.raises(bv.VariantError, match="not a shipped model"):
        bv.shipped_variants("huge")


def test_attention_pairs_against_var():
    from progvc_lab import bitstream

    codec = Codec.from_pretrained("tiny")
    video = torch.rand(4, 3, 64, 64)
    header = bitstream.read_stream(codec.encode(video)).header
    ours = bv.attention_pairs(codec, header)
    var = bv.attention_pairs(Codec.from_pretrained("tiny-var"), header)
    assert var["fraction_of_var"] == 1.0 and var["pairs"] == ours["var_pairs"]
    assert 0 < ours["fraction_of_var"] < 1   # the sparse mask computes fewer pairs than block-causal


@pytest.fixture(scope="module")
def doc():
    return bv.run_variants(sample_clip_path("foreman"), frames=FRAMES, perceptual=False, log=lambda *_: None)


def test_every_variant_is_measured(doc):
    assert set(doc["models"]) == {"tiny", "tiny-var", "tiny-infinitystar", "tiny-sparse-parent", "tiny-bsq"}
    K = 6
    for name, m in doc["models"].items():
        assert [p["k"] for p in m["per_k"]] == list(range(1, K + 1)), name
        assert [p["bytes"] for p in m["per_k"]] == sorted(p["bytes"] for p in m["per_k"]), name
        assert m["per_k"][-1]["bytes"] == m["bytes"]
        for p in m["per_k"]:
            # the file holds the model's bits plus the container and the coder's termination
            assert p["bytes"] >= p["model_bytes"], (name, p)
            assert p["bytes"] - p["model_bytes"] < 100, (name, p)
        assert len(m["bits_per_token_per_scale"]) == len(m["unigram_bits_per_token_per_scale"]) == K
        assert m["ratio_to_unigram"] < 1, name          # every shipped context model beats the unigram
        assert m["encode_fps"] > 0 and m["decode_fps"] > 0
        assert m["truncation_safe"] == (m["mask"] not in ("var", "infinitystar"))
        assert m["seen_in_training"] is False
    assert doc["models"]["tiny-bsq"]["quantizer"] == "bsq" and doc["models"]["tiny"]["quantizer"] == "vq"


def test_coders_round_trip_and_report_their_overhead(doc):
    coders = doc["coders"]
    assert set(coders) == {"torchac", "constriction"}
    for name, o in coders.items():
        assert o["round_trip_every_k"], name
        assert o["chunks"] == 6
        assert o["bytes"] >= o["model_bytes"]
    assert coders["torchac"]["calls"] == FRAMES * 6   # one string per block
    assert coders["constriction"]["calls"] == 6       # one per (GOP, scale)
    # same tokens: same model bits, whichever coder writes them
    assert coders["torchac"]["model_bytes"] == pytest.approx(coders["constriction"]["model_bytes"])


def test_samplers_decode_the_same_cut_stream(doc):
    sp = doc["samplers"]
    assert set(sp["samplers"]) == {"zero", "argmax", "mean", "sample", "copy"}
    for rows in sp["samplers"].values():
        assert [r["k"] for r in rows] == list(range(1, 6))
        assert [r["bytes"] for r in rows] == [r["bytes"] for r in sp["samplers"]["zero"]]   # equal bytes
        assert all(r["st-lpips"] is None for r in rows)                                     # perceptual off
    # the zero fill here is the model report's decode of the same cut: one metric code, same numbers
    for r, p in zip(sp["samplers"]["zero"], doc["models"]["tiny"]["per_k"]):
        assert r["bytes"] == p["bytes"] and r["psnr-y"] == pytest.approx(p["psnr-y"])
    # filling the unsent scales changes the picture
    assert sp["samplers"]["sample"][3]["psnr-y"] != sp["samplers"]["zero"][3]["psnr-y"]
    assert sp["full"]["bytes"] == doc["models"]["tiny"]["bytes"]


def test_format_shows_every_table(doc):
    text = bv.format_variants(doc)
    for part in ("-- masks: tiny (progvc_sparse), tiny-var (var), tiny-infinitystar (infinitystar), "
                 "tiny-sparse-parent (progvc_sparse_parent)",
                 "-- quantizers: tiny (vq), tiny-bsq (bsq)", "bits per token by scale", "attn pairs",
                 "-- entropy coders", "every k", "-- detail samplers", "k=5", "nothing to fill"):
        assert part in text, part


def test_markdown_table_is_built_from_the_results(doc):
    """The README's variant table comes from the JSON, one row per model, numbers as measured."""
    other = {**doc, "models": {n: {**m, "per_k": [{**p, "bytes": p["bytes"] + 1} for p in m["per_k"]]}
                               for n, m in doc["models"].items()}}
    text = bv.markdown_table({"Foreman": doc, "Other": other})
    lines = text.splitlines()
    assert lines[0].startswith("| variant (model) | Foreman k = 4 | Foreman k = 6 | Other k = 4 | Other k = 6 |")
    rows = {line.split("`")[1]: line for line in lines[2:]}
    assert list(rows) == ["tiny", "tiny-var", "tiny-infinitystar", "tiny-sparse-parent", "tiny-bsq"]
    for name, line in rows.items():
        m = doc["models"][name]
        cells = [c.strip() for c in line.strip("|").split("|")]
        k4 = next(p for p in m["per_k"] if p["k"] == 4)["bytes"]
        assert cells[1:5] == [str(k4), str(m["bytes"]), str(k4 + 1), str(m["bytes"] + 1)], name
        assert cells[-1] == ("yes" if m["truncation_safe"] else "no (one encode per k)"), name
    assert rows["tiny"].startswith("| mask progvc_sparse, VQ (`tiny`)")
    assert rows["tiny-bsq"].startswith("| quantizer BSQ (`tiny-bsq`)")
    assert "| 100 % |" in rows["tiny-var"]
    with pytest.raises(bv.VariantError, match="no mask or quantizer variants"):
        bv.markdown_table({"x": {**doc, "groups": {}}})


def test_narrowing_and_a_model_file(tmp_path):
    path = tmp_path / "mine.pt"
    Codec.from_pretrained("tiny").save(path)
    doc = bv.run_variants(sample_clip_path("akiyo"), kinds=("masks", "coders"), models=["tiny", str(path)],
                          coders=["constriction"], frames=2, log=lambda *_: None)
    assert doc["groups"] == {"masks": ["tiny", str(path)]}
    assert set(doc["models"]) == {"tiny", str(path)} and set(doc["coders"]) == {"constriction"}
    assert "samplers" not in doc
    # the same weights in a file: the same stream
    assert doc["models"][str(path)]["bytes"] == doc["models"]["tiny"]["bytes"]
    for bad, match in ((dict(models=["huge"]), "unknown model 'huge'"), (dict(coders=["zip"]), "unknown coder"),
                       (dict(kinds=("samplers",), samplers=["blur"]), "unknown sampler 'blur'")):
        with pytest.raises(bv.VariantError, match=match):
            bv.run_variants(sample_clip_path("akiyo"), **{"kinds": ("masks", "coders"), **bad}, frames=1,
                            log=lambda *_: None)


def test_plot_draws_every_kind_that_ran(doc, tmp_path):
    import matplotlib.image as mpimg

    path = bv.plot_variants(doc, tmp_path / "v.png")
    height, width = mpimg.imread(path).shape[:2]
    assert width > 3.5 * height        # four panels side by side
    only_coders = {**{k: v for k, v in doc.items() if k not in ("models", "samplers")}}
    height, width = mpimg.imread(bv.plot_variants(only_coders, tmp_path / "c.png")).shape[:2]
    assert width < 1.5 * height
    with pytest.raises(bv.VariantError, match="nothing to plot"):
        bv.plot_variants({k: v for k, v in doc.items() if k not in ("models", "samplers", "coders")},
                         tmp_path / "none.png")


def test_an_unsafe_base_skips_the_samplers_with_a_reason():
    doc = bv.run_variants(sample_clip_path("akiyo"), kinds=("samplers",), base="tiny-var", frames=1,
                          log=lambda *_: None)
    assert "samplers" not in doc and "not truncation safe" in doc["samplers_skipped"]
    assert "detail samplers skipped" in bv.format_variants(doc)


def test_the_readme_table_is_the_committed_results():
    """The README's variant table is what ``markdown_table`` makes of the committed bench JSON: a rerun of
    ``benchmarks/bench_variants.sh`` that changes a number fails here until the README is regenerated."""
    import json

    from progvc_lab.resources import REPO_ROOT

    results = REPO_ROOT / "benchmarks" / "results"
    readme = REPO_ROOT / "README.md"
    if not readme.is_file() or not (results / "bench_variants_foreman.json").is_file():
        pytest.skip("needs the repository's README and benchmarks/results (not in an installed wheel)")
    docs = {clip.capitalize(): json.loads((results / f"bench_variants_{clip}.json").read_text())
            for clip in ("foreman", "akiyo")}
    assert bv.markdown_table(docs) in readme.read_text()
