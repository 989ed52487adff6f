"""Pictures of the codec's insides: matplotlib figures (``figures``) and ipywidgets explorers
(``widgets``) used by the notebooks, the tutorials and the Voila app (``notebooks/explorer.ipynb``).

>>> from progvc_lab.viz import explorer_app
>>> explorer_app()            # in a notebook: all explorers in tabs

>>> from progvc_lab.viz import load_demo_codec, truncation_explorer
>>> truncation_explorer(load_demo_codec(), video)   # video (T, 3, H, W) in [0, 1], a few frames
"""
from .figures import (code_colours, figure_to_png, mask_summary, plot_bits_heatmap, plot_bits_per_scale, plot_mask,
                      plot_partial_reconstructions, plot_rd_curve, plot_sampler_comparison, plot_scale_step,
                      plot_token_pyramid, token_bits_maps)
from .widgets import (ClipSession, Explorer, ExplorerApp, LambdaSweep, bits_heatmap_explorer, explorer_app,
                      lambda_explorer, load_clip, load_demo_codec, mask_explorer, sampler_explorer, shipped_clips,
                      token_pyramid_explorer, truncation_explorer)

__all__ = [
    "code_colours", "figure_to_png", "mask_summary", "plot_bits_heatmap", "plot_bits_per_scale", "plot_mask",
    "plot_partial_reconstructions", "plot_rd_curve", "plot_sampler_comparison", "plot_scale_step",
    "plot_token_pyramid", "token_bits_maps",
    "ClipSession", "Explorer", "ExplorerApp", "bits_heatmap_explorer", "explorer_app", "load_clip",
    "load_demo_codec", "mask_explorer", "sampler_explorer", "shipped_clips", "token_pyramid_explorer",
    "truncation_explorer", "LambdaSweep", "lambda_explorer",
]
