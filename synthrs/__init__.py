"""SynthRS: a deterministic procedural benchmark of aerial-looking scenes with RSICD-style captions.

Images come in twin pairs of one class that differ in exactly one caption-stated detail (a count, a
colour or a side), so a retrieval model that only recognises the scene class cannot rank them.

Public API::

    write_dataset(SynthConfig(n=1000, seed=0), Path("data/synthrs"))  # images/ + dataset.json
    scene = make_scene(seed, index)          # deterministic per (seed, index)
    image = render_scene(scene, size=224)    # PIL RGB image
    texts = captions_for(scene, seed, index) # five captions, all true of the scene
"""

from rsir.synthrs.captions import captions_for
from rsir.synthrs.dataset import SynthConfig, SynthReport, write_dataset
from rsir.synthrs.render import render_scene
from rsir.synthrs.sampler import CLASS_NAMES, make_scene, split_of
from rsir.synthrs.scene import Group, Relation, Scene

__all__ = [
    "CLASS_NAMES",
    "Group",
    "Relation",
    "Scene",
    "SynthConfig",
    "SynthReport",
    "captions_for",
    "make_scene",
    "render_scene",
    "split_of",
    "write_dataset",
]
