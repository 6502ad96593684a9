"""samfast from Python, as a notebook would use segment_anything: only the import line differs.
  python3 examples/python_predict.py [--checkpoint sam_vit_b_01ec64.pth] [--image dog.jpg] [--device cpu]
Without --checkpoint a synthetic vit_b (random weights) is built: its masks are meaningless."""
import argparse
from pathlib import Path

import numpy as np

from samfast import SamAutomaticMaskGenerator, SamPredictor, read_image, sam_model_registry

ap = argparse.ArgumentParser()
ap.add_argument("--checkpoint")
ap.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda, cuda:N")
ap.add_argument("--points-per-side", type=int, default=16)
ap.add_argument("--image", default=str(Path(__file__).resolve().parents[2] / "shared/testdata/images/dog.jpg"))
args = ap.parse_args()

# 1. The model: upstream's registry and .to(); samfast picks bf16 on a GPU, fp32 on the CPU.
sam = sam_model_registry["vit_b"](checkpoint=args.checkpoint)
sam.to(device=args.device)
print(sam)

# 2. Prompts on one image: a foreground click, then a box, as in upstream's predictor notebook.
image = read_image(args.image)  # RGB uint8 (H, W, 3); cv2 / PIL arrays work the same
predictor = SamPredictor(sam)
predictor.set_image(image)
masks, scores, logits = predictor.predict(point_coords=np.array([[400, 260]]), point_labels=np.array([1]),
                                          multimask_output=True)
print("point:", masks.shape, "scores", np.round(scores, 3))
best = logits[np.argmax(scores)][None]  # feed the best low-res mask back with a second click
masks, scores, _ = predictor.predict(point_coords=np.array([[400, 260], [450, 300]]), point_labels=np.array([1, 1]),
                                     mask_input=best, multimask_output=False)
print("refined:", masks.shape, "area", int(masks[0].sum()))
masks, scores, _ = predictor.predict(box=np.array([100, 100, 500, 400]), multimask_output=False)
print("box:", masks.shape, "score", float(scores[0]))

# 3. Segment everything, with upstream's records.
generator = SamAutomaticMaskGenerator(sam, points_per_side=args.points_per_side)
records = generator.generate(image, progress=lambda done, total: print(f"  crop {done}/{total}"))
print(f"everything: {len(records)} masks", {k: type(v).__name__ for k, v in records[0].items()} if records else "")
