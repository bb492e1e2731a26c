"""One rank of a test run under torchrun, through the library as a user's script would call it:

    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py SPEC.json

SPEC holds `cfg` (TrainConfig fields) or `resume` (a checkpoint) with `changes`, and optionally `stops`: steps to train
to in turn, keeping a copy of the checkpoint of each as `step{N}.pt` (without them: to the end of the run). At the end every rank writes what it holds (its place, step, history,
weights and EMA) to `rank{R}.pt` in the run's folder, so a test can compare ranks and world sizes."""
import json, shutil, sys
from pathlib import Path

import torch

from minddpm.distributed import leave
from minddpm.training import Run, TrainConfig, resume, train

spec = json.loads(Path(sys.argv[1]).read_text())
run = resume(spec['resume'], **spec.get('changes', {})) if spec.get('resume') else Run(TrainConfig(**spec['cfg']))
out = Path(run.cfg.out)
for stop in spec.get('stops') or [None]:
    run = train(run=run, until=stop, progress=False)
    if stop and run.place.main: shutil.copy(out/'checkpoint.pt', out/f'step{stop}.pt')
torch.save({'place': (run.place.rank, run.place.world_size), 'step': run.step, 'steps': run.cfg.steps, 'history': run.history,
            'model': run.model.state_dict(), 'ema': run.ema.state_dict()['model']}, out/f'rank{run.place.rank}.pt')
leave()
