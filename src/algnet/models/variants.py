"""Named ALGNet variants: the paper's models, its NAFNet baseline and the ablations of tables 4-5.

The ablations add the paper's modules to its NAFNet-32 baseline (section 4.3: "applying the
proposed modules to the baseline successively"), so they keep NAFNet-32's block layout; their
17 G MACs in table 5 match that layout (17.7 G counted the paper's way) and not the default one's
19.5 G. Table 4's full "Baseline + CLGF + FA" is ``algnet_nafnet_layout``.
"""

from __future__ import annotations

from .algnet import ALGNet
from .nafnet import NAFNet
from .registry import register_model

NAFNET_LAYOUT = {"enc_blocks": (1, 1, 1, 28), "mid_blocks": 1, "dec_blocks": (1, 1, 1, 1)}


def _algnet(**kw) -> ALGNet:
    return ALGNet(**{"width": 32, **kw})


@register_model
def algnet(**kw) -> ALGNet:
    """ALGNet (w=32, blocks 2,2,4,8 / 8 / 8,4,2,2): paper tables 1-3 and 6."""
    return _algnet(**kw)


@register_model
def algnet_b(**kw) -> ALGNet:
    """ALGNet-B (w=64, same blocks)."""
    return _algnet(**{"width": 64, **kw})


@register_model
def algnet_nafnet_layout(**kw) -> ALGNet:
    """ALGNet with NAFNet-32's block layout (the first official upload)."""
    return _algnet(**{**NAFNET_LAYOUT, **kw})


@register_model
def algnet_sum(**kw) -> ALGNet:
    """Table 5: CLGF branches aggregated by sum."""
    return _algnet(**{**NAFNET_LAYOUT, "aggregation": "sum", **kw})


@register_model
def algnet_concat(**kw) -> ALGNet:
    """Table 5: CLGF branches aggregated by a 1x1 convolution over their concatenation."""
    return _algnet(**{**NAFNET_LAYOUT, "aggregation": "concat", **kw})


@register_model
def algnet_no_local(**kw) -> ALGNet:
    """Table 4: CLGF without the local branch."""
    return _algnet(**{**NAFNET_LAYOUT, "aggregation": "global", **kw})


@register_model
def algnet_no_global(**kw) -> ALGNet:
    """Table 4: CLGF without the global (Mamba) branch."""
    return _algnet(**{**NAFNET_LAYOUT, "aggregation": "local", **kw})


@register_model
def nafnet32(**kw) -> NAFNet:
    """NAFNet-32, the paper's baseline (table 4)."""
    return NAFNet(**{"width": 32, **NAFNET_LAYOUT, **kw})
