"""Pictures for notebook 09: docs/images/lambda_explorer.png (the widget's views, composed) and
tutorials/figures/09_*.png. Same calls as the notebook.

    .venv/bin/python scripts/make_course09_images.py      # from the repository root
"""
import io, re, sys, html, warnings
import numpy as np, torch
sys.path.insert(0, "scripts")
from make_widget_images import save, palette_png, MAX_BYTES
from PIL import Image, ImageDraw
from progvc_lab.course import sample_video
from progvc_lab.viz import figures, load_demo_codec
from progvc_lab.viz.widgets import LambdaSweep, lambda_explorer
from pathlib import Path
torch.set_num_threads(1)
codec = load_demo_codec()
video, fps = sample_video(frames=10, name="akiyo")
T = video.shape[0]
sweep = LambdaSweep(codec, video, fps, "akiyo")
_, st0 = codec.encode_with_stats(video, fps, copy_gate="count", rdo_lambda=0.0)   # as the notebook: one count per scale
_, stn = codec.encode_with_stats(video, fps, copy_gate="none", rdo_lambda=0.0)
fig = Path("tutorials/figures")
save(figures.plot_copy_statistics(figures.copy_rate_per_scale(st0["tokens"]),
     {"copy_gate='none'": figures.bits_per_token_per_scale(stn), "copy_gate='count'": figures.bits_per_token_per_scale(st0)}),
     fig / "09_copy_statistics.png")
gate = figures.copy_gate_trace(codec, st0)
copy = np.stack([np.r_[np.nan, (t[1:] == t[:-1]).double().flatten(1).mean(1).numpy()] for t in st0["tokens"]], 1)
save(figures.plot_gate_over_frames(gate, copy), fig / "09_gate_over_frames.png")
streams = {"GOP 32": sweep.encoded(0.005), "GOP 8": codec.encode_with_stats(video, fps, gop=8)}
save(figures.plot_bytes_per_frame({n: st["model_bits"].sum(1) / 8 for n, (d, st) in streams.items()},
                                  {"GOP 32": [0], "GOP 8": [0, 8]}), fig / "09_bytes_per_frame.png")
save(figures.plot_lambda_curve(sweep.points(), highlight=0.005), fig / "09_lambda_curve.png")
# the widget: its views at lambda = 0.02, frame 4, composed into one picture
box = lambda_explorer(None, sweep)
box.controls["lambda"].value = 0.02
box.controls["frame"].value = 4
assert box.status.value == ""
ims = {k: Image.open(io.BytesIO(v.value)).convert("RGB") for k, v in box.views.items() if hasattr(v, "format")}
label = html.unescape(re.sub("<[^>]+>", "", box.views["label"].value)).replace("·", "|")
top = [ims["frame"], ims["original"]]
bottom = [ims["rd"], ims["bars"]]
W = max(sum(i.width for i in top), sum(i.width for i in bottom)) + 30
H = 30 + 20 + max(i.height for i in top) + 10 + max(i.height for i in bottom)
canvas = Image.new("RGB", (W, H), "white")
d = ImageDraw.Draw(canvas)
d.text((10, 8), "lambda slider: 0 | 0.001 | 0.005 | [0.02] | 0.1      frame: 4", fill="black")
d.text((10, 26), label, fill="black")
x, y = 10, 46
for i, title in zip(top, ["decoded (all scales)", "original"]):
    canvas.paste(i, (x, y + 12)); d.text((x, y), title, fill="black"); x += i.width + 10
y += 12 + max(i.height for i in top) + 10
x = 10
for i in bottom:
    canvas.paste(i, (x, y)); x += i.width + 10
buf = io.BytesIO(); canvas.save(buf, format="PNG", optimize=True)
png = buf.getvalue()
if len(png) >= MAX_BYTES:
    png = palette_png(png)
Path("docs/images/lambda_explorer.png").write_bytes(png)
print("docs/images/lambda_explorer.png", len(png))
