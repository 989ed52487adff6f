"""The numbers of the README's "Temporal copy and RD-optimised tokens" paragraph: Akiyo, 10 frames, shipped model.

    python benchmarks/copy_rdo_numbers.py
"""
from progvc_lab.codec import Codec
from progvc_lab.data import read_video, sample_clip_path
from progvc_lab import metrics
c = Codec.from_pretrained("tiny")
v, fps = read_video(sample_clip_path("akiyo"), max_frames=10)
a, _ = c.encode_with_stats(v, fps, copy_gate="none", rdo_lambda=0.0)
b, sb = c.encode_with_stats(v, fps, copy_gate="count", rdo_lambda=0.0)
d, sd = c.encode_with_stats(v, fps)
print("none", len(a), "count", len(b), "default (context gate + rdo)", len(d), "dMS-SSIM", metrics.ms_ssim(v, c.decode(d)) - metrics.ms_ssim(v, c.decode(b)))
per = sd["model_bits"].sum(1) / 8
print("intra", round(per[0]), "P", round(per[1:].min()), round(per[1:].max()))
g8, s8 = c.encode_with_stats(v, fps, gop=8); print("gop8", len(g8))
# the copy rates the README's "Training" section quotes: finest-scale tokens equal to frame t-1's
for lam in (0.0, 0.005):
    _, st = c.encode_with_stats(v, fps, rdo_lambda=lam)
    print("lambda", lam, "copy rate per scale", [round(float((t[1:] == t[:-1]).float().mean()), 3) for t in st.tokens])
