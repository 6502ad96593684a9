"""CPU anchor: upstream segment_anything (PyTorch, fp32) timings on the same machine and checkpoint
as `samfast bench`, so that BENCHMARKS.md can give a ratio measured in one run.
Usage: /usr/bin/python3 bench/cpu_anchor.py CHECKPOINT MODEL [RUNS] [PROMPTS] [THREADS]
THREADS defaults to every core (Debian's torch would otherwise use one thread here).
Prints one JSON line: set_image_ms, predict_1_prompt_ms, predict_batch_ms (median of RUNS after a warm-up)."""
import json
import os
import sys
import time

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

ckpt, model = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
P = int(sys.argv[4]) if len(sys.argv) > 4 else 16
torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else len(os.sched_getaffinity(0)))
sam = sam_model_registry[model](checkpoint=ckpt).eval()
pred = SamPredictor(sam)
# The same synthetic 1024x1024 image as `samfast bench`.
img = ((np.arange(1024 * 1024 * 3, dtype=np.uint64) * 2654435761) % 2**32 >> 24).astype(np.uint8).reshape(1024, 1024, 3)
coords = torch.tensor([[[(i * 97) % 1024, (i * 61) % 1024]] for i in range(P)], dtype=torch.float)
labels = torch.ones(P, 1, dtype=torch.int)
enc, one, batch = [], [], []
with torch.inference_mode():
    for r in range(runs + 1):
        t0 = time.perf_counter()
        pred.set_image(img)
        t1 = time.perf_counter()
        pred.predict(point_coords=coords[0].numpy(), point_labels=np.array([1]), multimask_output=True)
        t2 = time.perf_counter()
        pred.predict_torch(pred.transform.apply_coords_torch(coords, pred.original_size), labels, multimask_output=True)
        t3 = time.perf_counter()
        if r:
            enc.append(t1 - t0), one.append(t2 - t1), batch.append(t3 - t2)
med = lambda v: 1000 * sorted(v)[len(v) // 2]
print(json.dumps({"impl": "upstream segment_anything fp32 (torch %s, %d threads)" % (torch.__version__, torch.get_num_threads()),
                  "model": model, "runs": runs, "prompts": P, "set_image_ms": med(enc),
                  "predict_1_prompt_ms": med(one), "predict_batch_ms": med(batch)}))
