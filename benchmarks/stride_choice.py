"""Where the tokenizer stride puts the rate ladder (DESIGN.md §3: "pick the default by measurement").

For each stride and frame size: the scale schedule, tokens per frame at each truncation level k, and
the raw rate log2(V) * tokens / pixels (an upper bound: entropy coding only lowers it). With a
trained model present (progvc_lab/checkpoints/tiny.pt, stride 8) it also prints the measured bpp of
each level on the shipped clip, to show how far below the raw bound the context model codes.

    python benchmarks/stride_choice.py
"""
import math

from progvc_lab.stages.quantizer import scale_schedule

V, K = 512, 6
SIZES = {"QCIF 176x144": (144, 176), "416x240": (240, 416), "CIF 352x288": (288, 352)}


def ladder(height, width, stride):
    hw = (math.ceil(height / stride), math.ceil(width / stride))
    sched = scale_schedule(hw, K)
    cum, rows = 0, []
    for k, (h, w) in enumerate(sched, 1):
        cum += h * w
        rows.append((k, (h, w), cum, cum * math.log2(V) / (height * width)))
    return hw, rows


def main():
    for name, (H, W) in SIZES.items():
        for stride in (8, 16):
            hw, rows = ladder(H, W, stride)
            print(f"{name}, stride {stride}: latent {hw[0]}x{hw[1]}")
            print("   k  scale    tokens/frame  raw bpp")
            for k, (h, w), n, bpp in rows:
                print(f"  {k:>2}  {h:>2}x{w:<3}  {n:>10}  {bpp:8.4f}")
    try:
        from progvc_lab.codec import Codec
        from progvc_lab.data import read_video, sample_clip_path
        from progvc_lab.bitstream import describe
        codec = Codec.from_pretrained("tiny")
    except FileNotFoundError:
        return
    video, fps = read_video(sample_clip_path("foreman"), max_frames=8)
    info = describe(codec.encode(video, fps=fps))
    T, H, W = info["num_frames"], info["height"], info["width"]
    print(f"\nmeasured, shipped tiny model (stride {codec.tokenizer.stride}) on Foreman, 8 frames:")
    cum = info["header_bytes"] + info["table_bytes"]
    for k, b in enumerate(info["bytes_per_scale"], 1):
        cum += b
        print(f"  k={k}: {cum * 8 / (T * H * W):.4f} bpp")


if __name__ == "__main__":
    main()
