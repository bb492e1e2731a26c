"""One rank of a test run under torchrun, through the library as a user's script would call it:

    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py SPEC.json

SPEC holds `cfg` (TrainConfig fields) or `resume` (a checkpoint) with `changes`, and optionally `until` (stop there,
copy the checkpoint to `until.pt`, then carry on). At the end every rank writes what it holds (its place, step, history,
weights and EMA) to `rank{R}.pt` in the run's folder, so a test can compare ranks and world sizes."""
import json, shutil, sys
from pathlib import Path

import torch

from minddpm.distributed import leave
from minddpm.training import Run, TrainConfig, resume, train

spec = json.loads(Path(sys.argv[1]).read_text())
run = resume(spec['resume'], **spec.get('changes', {})) if spec.get('resume') else Run(TrainConfig(**spec['cfg']))
out = Path(run.cfg.out)
if spec.get('until'):
    run = train(run=run, until=spec['until'], progress=False)
    if run.place.main: shutil.copy(out/'checkpoint.pt', out/'until.pt')
    run.place.barrier()
run = train(run=run, progress=False)
torch.save({'place': (run.place.rank, run.place.world_size), 'step': run.step, 'steps': run.cfg.steps, 'history': run.history,
            'model': run.model.state_dict(), 'ema': run.ema.state_dict()['model']}, out/f'rank{run.place.rank}.pt')
leave()
