"""The full-size openvla-7b preset matches the reference checkpoint's parameters, names and shapes exactly."""

from __future__ import annotations

import json
import re

import pytest

from conftest import CONFORMANCE


def read_key_list(path) -> list[tuple[str, list[int]]]:
    entries = []
    for line in path.read_text().splitlines():
        match = re.match(r"(\S+) \[([\d,\s]*)\] \S+", line.strip())
        if match:
            entries.append((match.group(1), [int(x) for x in match.group(2).split(",") if x.strip()]))
    return entries


@pytest.fixture(scope="module")
def openvla_7b():
    import robovla

    return robovla.build_model("openvla-7b", device="meta")


def test_openvla_7b_key_layout_is_exact(openvla_7b):
    reference = read_key_list(CONFORMANCE / "openvla-7b-keys.txt")
    ours = [(name, list(t.shape)) for name, t in openvla_7b.state_dict().items()]
    assert len(reference) == 982
    assert ours == reference  # same names, same shapes, same module order


def test_openvla_7b_parameter_counts(openvla_7b):
    import robovla

    summary = json.loads((CONFORMANCE / "openvla-7b-summary.json").read_text())
    counts = robovla.parameter_counts(openvla_7b)
    assert counts["total"] == 7_541_237_184 == summary["total_parameters"]
    per = summary["per_component_parameters"]
    assert counts["vision_backbone.featurizer"] == per["vision_backbone.featurizer (DINOv2 ViT-L/14 reg4)"]
    assert counts["vision_backbone.fused_featurizer"] == per["vision_backbone.fused_featurizer (SigLIP SO400M/14)"]
    assert counts["projector"] == per["projector"]


def test_openvla_7b_resolved_text_config_matches_reference():
    import robovla

    summary = json.loads((CONFORMANCE / "openvla-7b-summary.json").read_text())["text_config_resolved"]
    reconstructed = json.loads((CONFORMANCE / "openvla-7b-config.reconstructed.json").read_text())
    config = robovla.VLAConfig.from_hf_dict(reconstructed)
    text = config.text_config
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "rope_theta", "max_position_embeddings"):
        assert getattr(text, key) == summary[key], key
    assert config.action_vocab_size == 32000
    assert "auto_map" not in config.extra


def test_tiny_preset_matches_conformance_checkpoint_layout():
    import robovla

    reference = read_key_list(CONFORMANCE / "tiny-openvla-keys.txt")
    model = robovla.build_model("tiny", device="meta")
    assert [(n, list(t.shape)) for n, t in model.state_dict().items()] == reference


def test_single_backbone_variant_builds_and_runs():
    import numpy as np

    import robovla

    config = robovla.preset("tiny")
    config.use_fused_vision_backbone = False
    config.norm_stats = {"d": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}
    model = robovla.build_model(config)
    assert model.vision_backbone.fused_featurizer is None
    assert model.projector.fc1.in_features == 64 and not hasattr(model.projector, "fc3")
    action = model.predict_action(np.zeros((64, 80, 3), np.uint8), "pick up the cube")
    assert action.shape == (7,)


def test_tabletop_fine_is_tabletop_cpu_with_8px_patches():
    import robovla

    coarse, fine = (robovla.build_model(name, device="meta") for name in ("tabletop-cpu", "tabletop-fine"))
    assert coarse.vision_backbone.num_patches == 64 and fine.vision_backbone.num_patches == 256
    shapes = {n: t.shape for n, t in coarse.state_dict().items()}
    differing = sorted(n for n, t in fine.state_dict().items() if shapes[n] != t.shape)
    assert set(shapes) == set(fine.state_dict())  # the same modules; only patch embedding and positions grow
    assert all(n.endswith(("patch_embed.proj.weight", "pos_embed")) for n in differing) and len(differing) == 4


def test_unknown_preset_lists_valid_ones():
    import robovla

    with pytest.raises(robovla.RobovlaError, match="openvla-7b"):
        robovla.preset("openvla-13b")
