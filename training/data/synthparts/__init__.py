"""SynthParts: procedural tabletop scenes with objects, parts, depth and 3D part poses.

Public API: CATEGORIES, generate_scene, SplitConfig, load_split_config, split_scenes.
"""

from training.data.synthparts.categories import CATEGORIES
from training.data.synthparts.scene import generate_scene
from training.data.synthparts.splits import SplitConfig, load_split_config, split_scenes

__all__ = ["CATEGORIES", "SplitConfig", "generate_scene", "load_split_config", "split_scenes"]
