# %%
#| default_exp trained

# %% [markdown]
# # Trained models
# > A trained model in one small file: the weights for sampling, or the network as a `torch.export` or ONNX graph, and `load_model` that reads any of them, or a checkpoint

# %% [markdown]
# To *use* a model you need only its weights, its config and its class names. `export_model` writes
# those, the EMA and the raw weights both, in half precision, and `load_model` reads either a checkpoint or
# such a file into a `Trained`: the network in eval mode, its diffusion, its classes and image shape. With no
# path it gives the tiny digits model that ships inside minddpm, trained by `minddpm_train` (the command is
# in `data/README.md`), which lessons 02 to 05 use to show real samples before you have trained anything.
#
# A path ending in `.pt2` exports the EMA network's arithmetic as a `torch.export` graph instead, and one ending
# in `.onnx` as an ONNX graph (the `onnx` extra), for runtimes without minddpm's model code; `load_model` wraps
# either in a network that checks its input in Python and samples the same images (lesson 12 measures what
# each costs).

# %%
#| export
from __future__ import annotations
import copy, json, os, warnings, zipfile
from importlib import resources
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
from torch import nn

import minddpm
from minddpm.checkpoint import _read, load_checkpoint, saved_config
from minddpm.conditioning import ConditionalUNet
from minddpm.dit import DIT_PRESETS, ConditionalDiT, denoiser
from minddpm.forward import Diffusion
from minddpm.flow import FlowMatching
from minddpm.run import Run, TrainConfig, noising_process

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
import tempfile
import matplotlib.pyplot as plt
from minddpm.data import show_images
from minddpm.sampling import sample
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %%
#| export
@dataclass
class Trained:
    "A model ready to sample (EMA or raw weights, in eval mode), its diffusion, class names and image shape."
    model: ConditionalUNet | ConditionalDiT # the network (EMA or raw weights) in eval mode, on the requested device
    diffusion: Diffusion | FlowMatching   # the forward process (schedule, T) it was trained with; a flow model's path
    classes: list          # class names; label i is classes[i]
    shape: tuple           # (C, H, W) it was trained at
    config: TrainConfig    # the config of the run that trained it
    step: int              # optimiser steps it was trained for

# %%
#| export
#| hide
EXPORT_FORMATS = ('minddpm', 'torch.export', 'onnx')
GRAPH_SUFFIXES = {'.pt2': 'torch.export', '.onnx': 'onnx'}   # the graph formats `export_model` picks by a path's ending

class _Arithmetic(nn.Module):
    "What `torch.export` traces: the network's arithmetic alone, with labels arriving as embedding rows already checked."
    def __init__(self, net: ConditionalUNet): super().__init__(); self.net = net
    def forward(self, x, t, rows): return self.net.body(x, self.net.time_emb(t) + self.net.label_emb(rows))

class ExportedNetwork(nn.Module):
    "A network (UNet or DiT) read from a `torch.export` file (.pt2): it checks its input as the network did, then runs the exported graph."
    exported = True   # its weights live in the graph: `sample` autocasts it to bf16 rather than casting a copy
    def __init__(self, program,            # a `torch.export.ExportedProgram` of `_Arithmetic`, batch size dynamic
                 num_classes: int,         # labels are 0 … num_classes − 1, or `NULL_LABEL`
                 shape: tuple,             # (C, H, W) of the images it takes: fixed when it was exported
                 time_dtype=torch.long):   # what the graph takes as t: timesteps, or a flow model's float 1000·t (lesson 13)
        super().__init__()
        self.graph, self.num_classes, self.shape, self.time_dtype = program.module(), num_classes, tuple(shape), time_dtype

    def check_input(self, x: torch.Tensor):
        "Raise `ValueError` unless x is (B, C, H, W) with the (C, H, W) the network was exported for."
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this exported network takes images of shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        "The network's prediction for images `x` (B, C, H, W) at timesteps `t` (B,) given labels `y` (B,); `y=None` is unconditional."
        self.check_input(x)
        t = ConditionalUNet.check_timesteps(self, t, x).to(self.time_dtype)
        return self.graph(x, t, ConditionalUNet.check_labels(self, y, len(x), x.device))

    def train(self, mode: bool = True): # ignored: an exported graph has one mode, inference
        "Keep the flag only: `sample` switches models to eval and back, and an exported graph cannot change mode."
        self.training = mode
        return self

class OnnxNetwork(ExportedNetwork):
    "A network read from an ONNX file (.onnx), run by ONNX Runtime on the CPU in float32: checked as `ExportedNetwork`, then the session runs."
    def __init__(self, session,            # an `onnxruntime.InferenceSession` of `_Arithmetic`'s graph, batch size dynamic
                 num_classes: int,         # labels are 0 … num_classes − 1, or `NULL_LABEL`
                 shape: tuple,             # (C, H, W) of the images it takes
                 time_dtype=torch.long):   # what the graph takes as t: timesteps, or a flow model's float 1000·t (lesson 13)
        nn.Module.__init__(self)
        self.session, self.num_classes, self.shape, self.time_dtype = session, num_classes, tuple(shape), time_dtype
        self.graph = lambda x, t, rows: torch.from_numpy(self.session.run(None, {
            'x': x.detach().float().cpu().numpy(), 't': t.cpu().numpy(), 'rows': rows.cpu().numpy()})[0]).to(x.device)

def _export_graph(source, path: Path, format: str) -> Path:
    "The EMA network of `source` as a `torch.export` (.pt2) or ONNX graph at `path`, its config and classes beside it."
    if isinstance(source, Run):
        net, cfg, classes, step, shape = copy.deepcopy(source.ema.model), source.cfg, source.classes, source.step, source.shape
    else:
        m = load_model(source)
        net, cfg, classes, step, shape = m.model, m.config, m.classes, m.step, m.shape
    net = net.float().cpu().eval()
    t = torch.zeros(2, dtype=torch.float32 if cfg.objective == 'flow' else torch.long)   # a flow model is given 1000·t
    example = (torch.zeros(2, *shape), t, torch.zeros(2, dtype=torch.long))
    batch = torch.export.Dim('batch', min=1)
    meta = dict(config=asdict(cfg), classes=list(classes), step=step, shape=list(shape), version=minddpm.__version__)
    if format == 'onnx':
        try: import onnxscript  # noqa: F401  (the dynamo exporter's translator)
        except ImportError: raise ImportError('exporting to ONNX needs onnx and onnxscript: pip install "minddpm[onnx]"') from None
        with warnings.catch_warnings():   # it names the batch axis by its own rule, and says so
            warnings.filterwarnings('ignore', message='# The axis name')
            onnx_program = torch.onnx.export(_Arithmetic(net).eval(), example, dynamo=True, verbose=False,
                                             dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
                                             input_names=['x', 't', 'rows'], output_names=['prediction'])
        onnx_program.model.metadata_props['minddpm.json'] = json.dumps(meta)
        tmp = path.with_name(path.stem + '.tmp.onnx')
        onnx_program.save(tmp)
    else:
        program = torch.export.export(_Arithmetic(net).eval(), example, dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
        tmp = path.with_name(path.stem + '.tmp.pt2')   # torch.export wants its archives to end in .pt2
        torch.export.save(program, tmp, extra_files={'minddpm.json': json.dumps(meta)})
    os.replace(tmp, path)
    return path

def export_model(source,               # a `Run`, a checkpoint file, or a file from `export_model` (to re-export it as .pt2)
                 path,                 # the file to write (replaced if it exists); missing folders are made
                 dtype=torch.float16,  # 'minddpm' format: floating-point weights are cast to it; integer buffers are kept
                 format: str | None = None,  # 'minddpm' (weights), 'torch.export' or 'onnx' (the EMA network's graph); None: by path's ending, .pt2 → torch.export, .onnx → onnx
                 ) -> Path:
    """Write a model to `path`, atomically. 'minddpm': the EMA and raw weights (in `dtype`), config and classes, for
    `load_model`. 'torch.export': the EMA network as an exported float32 graph with a dynamic batch size (PyTorch's
    `.pt2` archive), with the config and classes beside it; `load_model` samples from it as from the weights, and it
    runs without minddpm's model code (`torch.export.load(path).module()`, called with labels as embedding rows).
    'onnx': the same graph through PyTorch's dynamo ONNX exporter (the `onnx` extra), with the config and classes in
    the model's metadata, for ONNX Runtime and other runtimes; inputs x, t, rows, output prediction.
    Raises `ValueError` for an unknown format, `ImportError` naming the extra when ONNX's packages are missing."""
    path = Path(path)
    format = format or GRAPH_SUFFIXES.get(path.suffix, 'minddpm')
    if format not in EXPORT_FORMATS: raise ValueError(f"Unknown format {format!r}; use {' or '.join(map(repr, EXPORT_FORMATS))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format != 'minddpm': return _export_graph(source, path, format)
    if isinstance(source, Run):
        state = {'model': source.model.state_dict(), 'ema': source.ema.state_dict(), 'config': asdict(source.cfg),
                 'classes': source.classes, 'step': source.step}
    else: state = load_checkpoint(source)
    cast = lambda sd: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    tmp = path.with_name(path.name + '.tmp')
    torch.save({'weights': cast(state['ema']['model']), 'raw_weights': cast(state['model']), 'config': state['config'],
                'classes': state['classes'], 'step': state['step'], 'version': minddpm.__version__}, tmp)
    os.replace(tmp, path)
    return path

def _load_exported(path, device) -> Trained:
    "A `.pt2` file from `export_model` as a `Trained` model."
    extra = {'minddpm.json': ''}
    if not zipfile.is_zipfile(path):   # checked here: torch.export.load would log a traceback before failing
        raise ValueError(f"{path} is not a readable torch.export file: it is not a zip archive (a .pt2 file is one)")
    try: program = torch.export.load(path, extra_files=extra)
    except Exception as e:
        raise ValueError(f"{path} is not a readable torch.export file ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    if not extra['minddpm.json']: raise ValueError(f"{path} is a torch.export file, but not one from minddpm's export_model: it has no config")
    meta = json.loads(extra['minddpm.json'])
    cfg = saved_config(meta)
    model = ExportedNetwork(program, len(meta['classes']), meta['shape'],
                         torch.float32 if cfg.objective == 'flow' else torch.long).to(device)
    diffusion = noising_process(cfg).to(device)
    return Trained(model.eval(), diffusion, list(meta['classes']), tuple(meta['shape']), cfg, meta['step'])

def _load_onnx(path, device) -> Trained:
    "An `.onnx` file from `export_model` as a `Trained` model, run by ONNX Runtime on the CPU."
    try: import onnxruntime
    except ImportError: raise ImportError(f'reading {path} needs ONNX Runtime: pip install "minddpm[onnx]"') from None
    try: session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    except Exception as e:
        raise ValueError(f"{path} is not a readable ONNX file ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    meta = session.get_modelmeta().custom_metadata_map.get('minddpm.json')
    if not meta: raise ValueError(f"{path} is an ONNX file, but not one from minddpm's export_model: it has no config")
    meta = json.loads(meta)
    cfg = saved_config(meta)
    model = OnnxNetwork(session, len(meta['classes']), meta['shape'], torch.float32 if cfg.objective == 'flow' else torch.long)
    diffusion = noising_process(cfg).to(device)
    return Trained(model.eval(), diffusion, list(meta['classes']), tuple(meta['shape']), cfg, meta['step'])


# %%
show_doc(export_model)

# %%
show_doc(ExportedNetwork)

# %%
show_doc(OnnxNetwork)

# %%
#| export
def load_model(path=None,            # a checkpoint, a file from `export_model` (weights, a .pt2 or an .onnx graph); None: the shipped tiny digits model
               device='cpu',         # where the model and its diffusion go
               weights: str = 'ema', # 'ema': the EMA weights; 'raw': the trained weights, not averaged (not in a graph file)
               ) -> Trained:
    "The model of a checkpoint or of a file from `export_model`; no path: the tiny digits model shipped with minddpm."
    if weights not in ('ema', 'raw'): raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file's path (a str or Path) or None for the shipped model, got {path!r}")
    if path is None: path = resources.files('minddpm.assets') / 'digits_tiny.pt'
    if Path(path).suffix in GRAPH_SUFFIXES and Path(path).is_file():
        if weights == 'raw': raise ValueError(f"{path} holds the EMA network only; weights='raw' needs a checkpoint or a weights export")
        return (_load_exported if Path(path).suffix == '.pt2' else _load_onnx)(path, device)
    state = _read(path, {'config', 'classes', 'step'})
    key = ('weights', 'ema') if weights == 'ema' else ('raw_weights', 'model')
    if key[0] in state: weights = state[key[0]]
    elif key[1] in state: weights = state['ema']['model'] if key[1] == 'ema' else state['model']
    else: raise ValueError(f"{path} holds no {weights} weights")
    cfg = saved_config(state)
    c = (weights['embed.weight'].shape[1] // DIT_PRESETS[cfg.unet]['patch'] ** 2 if cfg.unet in DIT_PRESETS   # a DiT's pixels per patch
         else weights['inc.net.0.weight'].shape[1])                   # the image channels the network takes
    model = denoiser(cfg.unet, len(state['classes']), c)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    diffusion = noising_process(cfg).to(device)
    return Trained(model.to(device).eval(), diffusion, list(state['classes']),
                   (c, cfg.img_size, cfg.img_size), cfg, state['step'])

# %% [markdown]
# The shipped model in its three files, and what it draws from the weights file and from its `torch.export`
# graph, from the same seed: the same images.

# %%
out = Path(tempfile.mkdtemp())
shipped = resources.files('minddpm.assets') / 'digits_tiny.pt'
files = {'weights, fp16': Path(shipped), 'torch.export, fp32': export_model(shipped, out/'tiny.pt2'),
         'ONNX, fp32': export_model(shipped, out/'tiny.onnx')}
plt.figure(figsize=(5, 1.3)); plt.barh(list(files), [p.stat().st_size / 1e6 for p in files.values()]); plt.xlabel('MB')
tiny, graph = load_model(), load_model(files['torch.export, fp32'])
draw = lambda m: sample(m.model, m.diffusion, torch.arange(10), shape=m.shape, generator=torch.Generator().manual_seed(0))
images = torch.cat([draw(tiny), draw(graph)])
show_images(images, labels=[0] * 10 + [1] * 10, classes=['weights', 'graph'], ncols=10, scale=.6)
test_close(images[10:], images[:10], eps=1e-5)
