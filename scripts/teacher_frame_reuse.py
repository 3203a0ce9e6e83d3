"""Teacher inference on 8 clips of neighbouring key frames (as eval and predict batch them), with and
without running each distinct frame through the backbone once; prints both and their ratio.
Usage: .venv/bin/python scripts/teacher_frame_reuse.py configs/teacher-tiny.yaml 128"""

import sys
import time

import torch

from v2idetr.bench.speed import speed_inputs
from v2idetr.config import load_config
from v2idetr.models.teacher import VideoTeacher

torch.set_num_threads(1)
torch.manual_seed(0)
cfg = load_config(sys.argv[1], ["model.backbone_weights=none"])
size = int(sys.argv[2])
net = VideoTeacher(cfg.model, 1, cfg.data.num_frames).eval()
clips = speed_inputs(8, cfg.data.num_frames, size, torch.device("cpu"))[0]
masks = torch.zeros(8, size, size, dtype=torch.bool)
ms = {True: [], False: []}
with torch.no_grad():
    for _ in range(5):
        for reuse in ms:
            net.reuse_repeated_frames = reuse
            t0 = time.perf_counter()
            net(clips, masks)
            ms[reuse].append(1000 * (time.perf_counter() - t0))
once, every = (sorted(ms[k])[2] for k in (True, False))
print(
    f"{sys.argv[1]} {size} px, 8 clips: {once:.0f} ms reusing frames, {every:.0f} ms without, ratio {once / every:.2f}"
)
