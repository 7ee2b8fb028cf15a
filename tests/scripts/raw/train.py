"""A script without Lightning: it saves to and resumes from the checkpoint folder itself."""

import os
import sys
from pathlib import Path

import torch

checkpoints = Path(os.environ["DL_CHECKPOINT_DIR"])
state_file = checkpoints / "state.pt"
state = torch.load(state_file) if state_file.exists() else {"step": 0}
for _ in range(3):
    state["step"] += 1
checkpoints.mkdir(parents=True, exist_ok=True)
torch.save(state, state_file, _use_new_zipfile_serialization=False)  # a legacy, non-zip file
Path(os.environ["SM_MODEL_DIR"], "weights.txt").write_text(str(state["step"]))
print(f"raw step {state['step']} args {sys.argv[1:]}")
if "--fail" in sys.argv:
    sys.exit("raw: asked to fail")
