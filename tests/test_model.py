"""Model contract: shapes per config and vocabulary size, gradient flow, vocabulary independence of image
features, checkpoint round trip, flat-baseline parent link, text encoders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from partglee_ros.config import ModelConfig, load_checkpoint, save_checkpoint
from partglee_ros.model import build_model
from partglee_ros.model.heads import SimilarityClassifier, projected_norm
from partglee_ros.model.partglee import containment_parent
from partglee_ros.model.text_encoder import CachedTextEncoder, OpenClipTextEncoder, SentenceTextEncoder
from training.criterion import SetCriterion

SMALL_CONFIGS = ["small", "small_faithful", "small_flat"]
ALL_CONFIGS = SMALL_CONFIGS + ["r18", "r50", "r50_box_features", "r50_flat"]


def load(name: str, **changes) -> ModelConfig:
    return dataclasses.replace(ModelConfig.from_file(f"config/models/{name}.yaml"), **changes)


def expected_parts(c: ModelConfig) -> int:
    return c.num_queries if c.architecture == "flat" else c.qformer_topk * c.num_parse_queries


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_output_shapes_for_every_config_and_vocabulary_size(name: str) -> None:
    torch.manual_seed(0)
    c = load(name)
    model = build_model(c).eval()
    # the big configs at a small size (>= num_queries encoder tokens) to keep the test fast on 2 cores
    b, h, w = (1, 128, 160) if name.startswith("r") else (2, 256, 320)
    images = torch.randn(b, 3, h, w)
    n, p = c.num_queries, expected_parts(c)
    # small configs: every K; big configs: one forward with the extremes (K_obj = 200, K_part = 1)
    vocab_sizes = [(1, 2), (7, 8), (200, 201)] if name in SMALL_CONFIGS else [(200, 1)]
    for k, k_part in vocab_sizes:
        with torch.no_grad():
            out = model(images, torch.randn(k, c.text_dim), torch.randn(k_part, c.text_dim))
        assert set(out) == {
            "obj_logits",
            "obj_boxes",
            "obj_masks",
            "part_logits",
            "part_boxes",
            "part_masks",
            "part_parent",
        }
        assert out["obj_logits"].shape == (b, n, k)
        assert out["obj_boxes"].shape == (b, n, 4)
        assert out["obj_masks"].shape == (b, n, h // 4, w // 4)
        assert out["part_logits"].shape == (b, p, k_part)
        assert out["part_boxes"].shape == (b, p, 4)
        assert out["part_masks"].shape == (b, p, h // 4, w // 4)
        assert out["part_parent"].shape == (b, p) and out["part_parent"].dtype == torch.int64
        assert out["part_parent"].min() >= 0 and out["part_parent"].max() < n
        for key in ("obj_boxes", "part_boxes"):
            assert out[key].min() >= 0 and out[key].max() <= 1
        assert all(torch.isfinite(v.float()).all() for v in out.values())


def test_part_parent_points_at_the_top_scoring_objects() -> None:
    c = load("small")
    model = build_model(c).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128), torch.randn(4, c.text_dim), torch.randn(3, c.text_dim))
    top = out["obj_logits"][0].max(-1).values.topk(c.qformer_topk).indices
    parents = out["part_parent"][0].view(c.qformer_topk, c.num_parse_queries)
    assert torch.equal(parents, top[:, None].expand(-1, c.num_parse_queries))


def _random_targets(k_obj: int, k_part: int, h: int, w: int) -> list[dict]:
    out = []
    for n_obj in (2, 1):
        boxes = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.7, 0.6, 0.4, 0.5]])[:n_obj]
        masks = torch.zeros(n_obj, h, w, dtype=torch.bool)
        masks[0, 10:40, 10:40] = True
        parts_boxes = boxes[:, None].repeat(1, 2, 1).reshape(-1, 4) * torch.tensor([1, 1, 0.5, 0.5])
        out.append(
            {
                "objects": {"labels": torch.randint(k_obj, (n_obj,)), "boxes": boxes, "masks": masks},
                "parts": {
                    "labels": torch.randint(k_part, (2 * n_obj,)),
                    "boxes": parts_boxes,
                    "masks": masks.repeat_interleave(2, 0),
                    "parent": torch.arange(n_obj).repeat_interleave(2),
                },
            }
        )
    return out


@pytest.mark.parametrize(
    "name,changes",
    [("small", {}), ("small_faithful", {"early_fusion": False}), ("small_flat", {})],
)
def test_gradients_reach_every_trainable_parameter(name: str, changes: dict) -> None:
    torch.manual_seed(0)
    c = load(name, **changes)
    c.loss.dn_enabled = True
    c.loss.num_points = 256
    model = build_model(c).train()
    targets = _random_targets(5, 4, 128, 128)
    out = model(torch.randn(2, 3, 128, 128), torch.randn(5, c.text_dim), torch.randn(4, c.text_dim), targets)
    assert "obj_dn" in out and "obj_aux" in out and "obj_enc" in out
    criterion = SetCriterion(c.loss, flat=c.architecture == "flat")
    loss, _ = criterion(out, targets)
    assert torch.isfinite(loss)
    # zero-initialised layers (DINO box-delta heads, deformable offsets, timm's zero_init_last BN) block the
    # gradient of what lies before them at step 0 by design; after one update every path must carry gradient
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    model.zero_grad()
    out = model(torch.randn(2, 3, 128, 128), torch.randn(5, c.text_dim), torch.randn(4, c.text_dim), targets)
    criterion(out, targets)[0].backward()
    dead = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not dead, f"parameters without gradient: {dead}"


def test_vocabulary_changes_scores_but_not_image_features_without_early_fusion() -> None:
    torch.manual_seed(0)
    c = load("small", early_fusion=False)
    model = build_model(c).eval()
    captured = []
    model.pixel_decoder.register_forward_hook(lambda m, i, o: captured.append(o))
    images = torch.randn(1, 3, 128, 160)
    vocab_a = torch.randn(5, c.text_dim), torch.randn(4, c.text_dim)
    vocab_b = torch.randn(6, c.text_dim), torch.randn(3, c.text_dim)
    with torch.no_grad():
        out_a = model(images, *vocab_a)
        out_b = model(images, *vocab_b)
        out_a2 = model(images, *vocab_a)
    assert torch.equal(captured[0].memory, captured[1].memory)
    assert torch.equal(captured[0].pixel_embedding, captured[1].pixel_embedding)
    assert out_a["obj_logits"].shape[-1] == 5 and out_b["obj_logits"].shape[-1] == 6
    assert not torch.allclose(out_a["obj_logits"][..., :5], out_b["obj_logits"][..., :5])
    assert torch.equal(out_a["obj_logits"], out_a2["obj_logits"])


def test_early_fusion_makes_image_features_depend_on_the_vocabulary() -> None:
    torch.manual_seed(0)
    model = build_model(load("small", early_fusion=True)).eval()
    with torch.no_grad():
        model.pixel_decoder.fusion.img_gain.fill_(1.0)  # a trained fusion, not the near-identity init
    captured = []
    model.pixel_decoder.register_forward_hook(lambda m, i, o: captured.append(o.memory))
    images = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        model(images, torch.randn(5, 384), torch.randn(4, 384))
        model(images, torch.randn(5, 384), torch.randn(4, 384))
    assert not torch.allclose(captured[0], captured[1])


def test_similarity_classifier_is_the_cosine_of_projected_queries_and_text() -> None:
    """Eq. 3 computed on the query side of W_proj equals the textbook form: cos(q W^T, t) * scale + bias.
    In fp16 the norm is taken in fp32, so activations whose squares overflow fp16 still give finite logits."""
    torch.manual_seed(0)
    head = SimilarityClassifier(64, 384)
    queries, text = torch.randn(2, 40, 64) * 3, torch.randn(2, 7, 384)
    expected = (
        torch.einsum("bqd,bkd->bqk", F.normalize(head.proj(queries), dim=-1), F.normalize(text, dim=-1))
        * head.logit_scale.exp()
        + head.bias
    )
    torch.testing.assert_close(head(queries, text), expected, atol=1e-4, rtol=1e-4)
    big = torch.full((1, 3, 64), 200.0)  # |q W^T|^2 ~ 1e6 > fp16's largest value
    logits16 = head.half()(big.half(), text[:1].half())
    assert torch.isfinite(logits16).all()
    torch.testing.assert_close(logits16.float(), head.float()(big, text[:1]), atol=0.1, rtol=0.02)


def test_checkpoint_round_trip_gives_equal_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    c = load("small")
    model = build_model(c).eval()
    save_checkpoint(model, c, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (
        tmp_path / "ckpt" / "config.json"
    ).is_file()
    loaded, c2 = load_checkpoint(tmp_path / "ckpt")
    assert c2 == c
    args = (torch.randn(1, 3, 128, 160), torch.randn(3, 384), torch.randn(2, 384))
    with torch.no_grad():
        a, b = model(*args), loaded(*args)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_backbone_loads_a_timm_classification_checkpoint(tmp_path) -> None:
    """A timm classification state dict (with its ``fc`` head) loads; anything else unused or missing fails."""
    import timm
    from safetensors.torch import save_file

    from partglee_ros.model.backbone import Backbone

    kwargs = {"layers": [1, 1, 1, 1], "channels": [16, 16, 32, 32], "stem_width": 16}
    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False, num_classes=10, **kwargs).state_dict()
    assert {"fc.weight", "fc.bias"} <= set(state)
    save_file(state, str(tmp_path / "cls.safetensors"))
    backbone = Backbone("resnet18", kwargs, str(tmp_path / "cls.safetensors"))
    for key, value in backbone.body.state_dict().items():
        assert torch.equal(value, state[key]), key
    save_file(state | {"neck.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(RuntimeError, match="does not use"):
        Backbone("resnet18", kwargs, str(tmp_path / "extra.safetensors"))
    save_file({k: v for k, v in state.items() if k != "conv1.weight"}, str(tmp_path / "short.safetensors"))
    with pytest.raises(RuntimeError, match="lack 1 keys"):
        Backbone("resnet18", kwargs, str(tmp_path / "short.safetensors"))


def test_config_yaml_json_round_trip(tmp_path) -> None:
    c = load("r50_box_features")
    for suffix in (".yaml", ".json"):
        c.save(tmp_path / f"c{suffix}")
        assert ModelConfig.from_file(tmp_path / f"c{suffix}") == c
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"hidden_dimension": 3})
    with pytest.raises(ValueError, match="qformer_mode"):
        ModelConfig(qformer_mode="magic")


def test_flat_baseline_parent_is_the_best_containing_box() -> None:
    boxes = torch.tensor(
        [[[0.5, 0.5, 0.8, 0.8], [0.4, 0.4, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1], [0.5, 0.5, 0.9, 0.9]]]
    )
    scores = torch.tensor([[0.9, 0.1, 0.1, 0.3]])
    parent = containment_parent(boxes, scores)[0]
    assert parent[1] == 0  # inside both big boxes, box 0 scores higher
    assert parent[2] == 3  # only box 3 reaches the corner
    assert parent[0] == 3  # never itself


def test_sentence_text_encoder_is_offline_and_cached() -> None:
    enc = CachedTextEncoder(SentenceTextEncoder())
    a = enc.encode(["mug", "mug:handle", "pan"])
    assert a.shape == (3, 384) and enc.dim == 384
    calls = []
    inner = enc.encoder.encode
    enc.encoder.encode = lambda names: calls.append(list(names)) or inner(names)
    b = enc.encode(["pan", "mug", "jar", "jar"])  # only the new name is encoded, once
    assert calls == [["jar"]]
    assert a.dtype == np.float32 and np.array_equal(b[:2], a[[2, 0]]) and np.array_equal(b[2], b[3])
    np.testing.assert_allclose(b[2], inner(["jar"])[0], rtol=0, atol=1e-5)
    a = torch.from_numpy(a)
    sim = torch.nn.functional.cosine_similarity
    assert sim(a[0], a[1], dim=0) > sim(a[1], a[2], dim=0)  # "handle of a mug" is closer to mug than pan


def test_open_clip_needs_weights_or_explicit_random_init(tmp_path) -> None:
    with pytest.raises(ValueError, match="allow_random_init"):
        OpenClipTextEncoder("ViT-S-32")
    with pytest.raises(FileNotFoundError):
        OpenClipTextEncoder("ViT-S-32", weights=tmp_path / "missing.safetensors")
    enc = OpenClipTextEncoder("ViT-S-32", allow_random_init=True)
    emb = enc.encode(["mug", "pan"])
    assert emb.shape == (2, enc.dim) and emb.dtype == np.float32 and np.isfinite(emb).all()


def test_the_classifier_norm_stays_fp32_under_autocast() -> None:
    """Autocast runs matmuls in bf16 whatever their inputs' dtype; the norm must not be one of them."""
    torch.manual_seed(0)
    queries, w = torch.randn(1, 6, 32) * 30, torch.randn(16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = projected_norm(queries.bfloat16(), w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, projected_norm(queries.bfloat16().float(), w), rtol=1e-6, atol=0)
