"""The assembled PartGLEE model (paper Fig. 2) and the flat baseline (paper Fig. 4a), built from a ModelConfig.

Inference contract (kept for the runtime and ONNX export; see docs/MODEL.md):
``model(images (B,3,H,W), object_text (K_obj,D), part_text (K_part,D))`` -> dict with
``obj_logits (B,N,K_obj)``, ``obj_boxes (B,N,4)``, ``obj_masks (B,N,H/4,W/4)``, ``part_logits (B,P,K_part)``,
``part_boxes (B,P,4)``, ``part_masks (B,P,H/4,W/4)``, ``part_parent (B,P)`` int64 index into the N objects.
Boxes are normalised cxcywh, masks and logits are raw logits. No Python branch depends on tensor values.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from partglee_ros.config import ModelConfig
from partglee_ros.model.backbone import Backbone
from partglee_ros.model.denoising import DenoisingQueries, LabelEmbedding, build_denoising_queries
from partglee_ros.model.object_decoder import DecoderOutput, ObjectDecoder
from partglee_ros.model.part_decoder import PartDecoder
from partglee_ros.model.pixel_decoder import PixelDecoder
from partglee_ros.model.preprocess import ENCODER_STRIDES


def box_containment(part: Tensor, parent: Tensor) -> Tensor:
    """Share of each part box's area inside its parent box, |B_obj ∩ B_part| / |B_part| of Eq. 4 (0 for an
    empty part box). Boxes xyxy (..., 4), broadcast against each other -> (...)."""
    lt = torch.maximum(part[..., :2], parent[..., :2])
    rb = torch.minimum(part[..., 2:], parent[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (part[..., 2:] - part[..., :2]).clamp(min=1e-9).prod(-1)
    return inter / area


def containment_parent(boxes: Tensor, object_scores: Tensor) -> Tensor:
    """Flat baseline's parent link: for each query, the other query that best contains its box, weighted by
    that query's object score. boxes (B, N, 4) cxcywh, object_scores (B, N) -> (B, N) int64."""
    xyxy = box_convert(boxes, "cxcywh", "xyxy")
    containment = box_containment(xyxy[:, :, None], xyxy[:, None])  # (B, N, N): child i, parent j
    eye = torch.eye(boxes.shape[1], dtype=torch.bool, device=boxes.device)
    score = torch.where(
        eye[None], torch.full_like(containment, -1.0), containment * object_scores[:, None, :]
    )
    return score.argmax(-1)


class PartGLEE(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.backbone = Backbone(c.backbone, c.backbone_kwargs, c.backbone_weights)
        n_levels = len(ENCODER_STRIDES)
        self.pixel_decoder = PixelDecoder(
            self.backbone.channels,
            c.hidden_dim,
            c.mask_dim,
            c.num_heads,
            c.ffn_dim,
            c.enc_layers,
            c.enc_points,
            c.dropout,
            c.text_dim,
            c.early_fusion,
        )
        self.object_decoder = ObjectDecoder(
            c.hidden_dim,
            c.mask_dim,
            c.text_dim,
            c.num_queries,
            c.ffn_dim,
            c.dec_layers,
            n_levels,
            c.num_heads,
            c.dec_points,
            c.dropout,
        )
        self.part_decoder = None
        if c.architecture == "hierarchical":
            self.part_decoder = PartDecoder(
                c.hidden_dim,
                c.mask_dim,
                c.text_dim,
                c.qformer_topk,
                c.num_parse_queries,
                c.qformer_layers,
                c.qformer_mode,
                c.qformer_box_grid,
                c.ffn_dim,
                c.part_dec_layers,
                n_levels,
                c.num_heads,
                c.dec_points,
                c.dropout,
            )
        self.label_embedding = LabelEmbedding(c.text_dim, c.hidden_dim) if c.loss.dn_enabled else None

    def forward(
        self, images: Tensor, object_text: Tensor, part_text: Tensor, targets: list[dict] | None = None
    ) -> dict[str, Tensor]:
        """``targets`` (training only, from ``training.targets``) feed query denoising when it is enabled."""
        b, k_obj = images.shape[0], object_text.shape[0]
        text = torch.cat([object_text, part_text], 0)[None].expand(b, -1, -1)
        pix = self.pixel_decoder(self.backbone(images), text)
        obj_text, part_text_fused = pix.text[:, :k_obj], pix.text[:, k_obj:]
        flat = self.part_decoder is None
        decoder_text = pix.text if flat else obj_text

        dn = None
        if self.training and self.label_embedding is not None and targets is not None:
            lc = self.config.loss
            dn_targets = [decoder_targets(t, k_obj, flat) for t in targets]
            dn = build_denoising_queries(
                dn_targets,
                decoder_text,
                self.label_embedding,
                self.config.num_queries,
                lc.dn_num,
                lc.dn_box_noise,
                lc.dn_label_noise,
            )
        objects = self.object_decoder(
            pix.memory, pix.spatial_shapes, ENCODER_STRIDES, pix.pixel_embedding, decoder_text, dn
        )
        if flat:
            return self._flat_outputs(objects, k_obj, dn)

        parts, parent, parent_boxes = self.part_decoder(
            objects, pix.memory, pix.spatial_shapes, pix.finest, pix.pixel_embedding, part_text_fused
        )
        out = _level_outputs("obj", objects) | _level_outputs("part", parts)
        out["part_parent"] = parent
        if self.training:
            out["part_parent_boxes"] = parent_boxes
            _add_dn(out, objects, dn)
        return out

    def _flat_outputs(
        self, objects: DecoderOutput, k_obj: int, dn: DenoisingQueries | None
    ) -> dict[str, Tensor]:
        """Flat baseline: one set of queries scored over the joint vocabulary; the object/part split of the
        logits gives both levels, and the parent of a query is the query that best contains its box."""
        out: dict = {}
        for name, layers in (("aux", objects.layers[:-1]), ("final", objects.layers[-1:])):
            split = [
                (
                    {"logits": p["logits"][..., :k_obj], "boxes": p["boxes"], "masks": p["masks"]},
                    {"logits": p["logits"][..., k_obj:], "boxes": p["boxes"], "masks": p["masks"]},
                )
                for p in layers
            ]
            if name == "final":
                ((obj, part),) = split
                out.update(
                    {f"obj_{k}": v for k, v in obj.items()} | {f"part_{k}": v for k, v in part.items()}
                )
            elif self.training:
                out["obj_aux"] = [s[0] for s in split]
                out["part_aux"] = [s[1] for s in split]
        out["part_parent"] = containment_parent(out["obj_boxes"], out["obj_logits"].sigmoid().max(-1).values)
        if self.training:
            out["obj_enc"] = objects.enc
            _add_dn(out, objects, dn)
        return out


def decoder_targets(target: dict, k_obj: int, flat: bool) -> dict[str, Tensor]:
    """Targets in the label space of the object decoder: the objects, or for the flat baseline objects and
    parts joined into one level with part labels offset by K_obj (used by denoising and the criterion)."""
    objs = target["objects"]
    if not flat:
        return objs
    parts = target["parts"]
    joined = {"labels": torch.cat([objs["labels"], parts["labels"] + k_obj])}
    for key in ("boxes", "masks"):
        if key in objs:
            joined[key] = torch.cat([objs[key], parts[key]])
    return joined


def _level_outputs(prefix: str, dec: DecoderOutput) -> dict:
    final = dec.layers[-1]
    out: dict = {f"{prefix}_{k}": v for k, v in final.items()}
    if len(dec.layers) > 1:
        out[f"{prefix}_aux"] = dec.layers[:-1]
    if dec.enc is not None:
        out[f"{prefix}_enc"] = dec.enc
    return out


def _add_dn(out: dict, objects: DecoderOutput, dn: DenoisingQueries | None) -> None:
    if dn is not None:
        out["obj_dn"] = objects.dn_layers
        out["dn_groups"], out["dn_group_size"] = dn.groups, dn.group_size


def build_model(config: ModelConfig) -> PartGLEE:
    return PartGLEE(config)
