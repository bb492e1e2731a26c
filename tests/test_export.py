"""The exported network (`export_model(…, format='torch.export')`, a .pt2 file, or 'onnx', an .onnx file): it equals the
eager EMA network for any batch size, samples the same images through `load_model` and the commands, runs with PyTorch
alone (or ONNX Runtime alone), and refuses what it cannot be."""
import json, subprocess, sys, zipfile
from importlib import resources

import pytest
import torch

from minddpm.cli import minddpm_edit, minddpm_sample, minddpm_train
from minddpm.sampling import sample
from minddpm.training import ExportedNetwork, Run, export_model, load_model, train
from test_commands import run, small

SHIPPED = resources.files('minddpm.assets') / 'digits_tiny.pt'

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    r = train(small(root/'run', steps=3, objective='v'), progress=False)
    return r, export_model(r, root/'run.pt2'), export_model(root/'run'/'checkpoint.pt', root/'ckpt.pt2')

def test_the_graph_equals_the_eager_ema_network_at_any_batch_size(trained):
    r, from_run, from_checkpoint = trained
    for path in (from_run, from_checkpoint):
        m = load_model(path)
        assert isinstance(m.model, ExportedNetwork) and m.classes == r.classes and m.shape == r.shape and m.step == 3
        assert m.config.objective == 'v' and m.diffusion.objective == 'v'
        for b in (1, 5, 64):
            x, t, y = torch.randn(b, *r.shape), torch.randint(0, 1000, (b,)), torch.randint(-1, 10, (b,))
            with torch.no_grad(): torch.testing.assert_close(m.model(x, t, y), r.ema.model(x, t, y), rtol=0, atol=1e-5)

def test_load_model_samples_the_same_images_from_the_graph_as_from_the_checkpoint(trained):
    r, path, _ = trained
    graph, eager = load_model(path), load_model(r.checkpoint[0])
    for kw in (dict(sampler='ddim'), dict(sampler='dpm++', steps=10), dict(w=0.0, steps=20)):
        a = sample(graph.model, graph.diffusion, torch.arange(10), shape=graph.shape, generator=torch.Generator().manual_seed(1), **kw)
        b = sample(eager.model, eager.diffusion, torch.arange(10), shape=eager.shape, generator=torch.Generator().manual_seed(1), **kw)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    x = sample(graph.model, graph.diffusion, torch.arange(4), shape=graph.shape, precision='bf16', generator=torch.Generator().manual_seed(1))
    assert x.shape == (4, *graph.shape) and torch.isfinite(x).all()          # bf16 by autocast: the graph's weights stay float32

def test_the_archive_runs_with_pytorch_alone(trained, tmp_path):
    "No minddpm import: torch.export.load gives the graph, called with labels as embedding rows (the null label is row 10)."
    r, path, _ = trained
    x, t, y = torch.randn(3, *r.shape), torch.tensor([0, 500, 999]), torch.tensor([1, 7, 10])
    with torch.no_grad(): want = r.ema.model(x, t, torch.tensor([1, 7, -1]))
    torch.save(dict(x=x, t=t, y=y, want=want), tmp_path/'io.pt')
    code = (f"import sys, torch; assert 'minddpm' not in sys.modules; io = torch.load({str(tmp_path/'io.pt')!r}); "
            f"g = torch.export.load({str(path)!r}).module(); "
            f"torch.testing.assert_close(g(io['x'], io['t'], io['y']), io['want'], rtol=0, atol=1e-5); "
            f"assert 'minddpm' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.stdout.strip() == 'ok', out.stderr[-2000:]
    assert 'minddpm.json' in ' '.join(zipfile.ZipFile(path).namelist())    # the config and classes travel inside

def test_the_graph_checks_its_input_in_python(trained):
    m = load_model(trained[1])
    with pytest.raises(ValueError, match=r'takes images of shape \(B, 1, 16, 16\), got \(2, 1, 8, 8\)'):
        m.model(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match=r'labels must be in \[0, 10\)'): m.model(torch.zeros(2, 1, 16, 16), torch.zeros(2), torch.tensor([3, 12]))
    with pytest.raises(ValueError, match=r'NULL_LABEL \(-1\); got \[-2\]'): m.model(torch.zeros(2, 1, 16, 16), torch.zeros(2), torch.tensor([-2, 3]))

def test_what_cannot_be_exported_or_loaded_is_refused_by_name(trained, tmp_path):
    r, path, _ = trained
    with pytest.raises(ValueError, match="Unknown format 'tflite'; use 'minddpm' or 'torch.export' or 'onnx'"):
        export_model(r, tmp_path/'x.tflite', format='tflite')
    with pytest.raises(ValueError, match="holds the EMA network only"): load_model(path, weights='raw')
    (tmp_path/'broken.pt2').write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match='broken.pt2 is not a readable torch.export file'): load_model(tmp_path/'broken.pt2')
    plain = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(plain, tmp_path/'other.pt2')
    with pytest.raises(ValueError, match="not one from minddpm's export_model"): load_model(tmp_path/'other.pt2')

def test_the_commands_export_and_use_a_pt2_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_train, '--steps', '2', '--batch-size', '8', '--out', 'run', '--export', 'tiny.pt2', capsys=capsys)
    assert code == 0 and (tmp_path/'tiny.pt2').is_file() and 'exported the model to tiny.pt2' in out, err[-2000:]
    code, out, err = run(minddpm_train, '--resume', 'run/checkpoint.pt', '--export', 'again.pt2', capsys=capsys)   # a finished run
    assert code == 0 and (tmp_path/'again.pt2').is_file() and 'the run had already finished, at step 2' in out, err[-2000:]
    code, out, err = run(minddpm_sample, 'tiny.pt2', '--n', '1', '--steps', '5', '--out', 'grid.png', '--each', 'each', capsys=capsys)
    assert code == 0 and len(list((tmp_path/'each').glob('*.png'))) == 10, err[-2000:]
    code, out, err = run(minddpm_edit, 'tiny.pt2', 'each', '--task', 'inpaint', '--mask', 'left', '--steps', '5', '--out', 'edit.png', capsys=capsys)
    assert code == 0 and (tmp_path/'edit.png').is_file(), err[-2000:]
    code, out, err = run(minddpm_sample, 'tiny.pt2', '--img-size', '32', '--out', 'big.png', capsys=capsys)
    assert code == 2 and 'takes images of shape (B, 1, 16, 16)' in err, err

def test_the_onnx_file_equals_the_eager_network_and_samples_the_same_images(trained, tmp_path):
    r = trained[0]
    path = export_model(r, tmp_path/'run.onnx')
    m, eager = load_model(path), load_model(r.checkpoint[0])
    assert type(m.model).__name__ == 'OnnxNetwork' and m.classes == r.classes and m.step == 3 and m.diffusion.objective == 'v'
    for b in (1, 5, 64):
        x, t, y = torch.randn(b, *r.shape), torch.randint(0, 1000, (b,)), torch.randint(-1, 10, (b,))
        with torch.no_grad(): torch.testing.assert_close(m.model(x, t, y), r.ema.model(x, t, y), rtol=0, atol=1e-5)
    for kw in (dict(sampler='ddim'), dict(sampler='dpm++', steps=10)):
        a = sample(m.model, m.diffusion, torch.arange(10), shape=m.shape, generator=torch.Generator().manual_seed(1), **kw)
        b = sample(eager.model, eager.diffusion, torch.arange(10), shape=eager.shape, generator=torch.Generator().manual_seed(1), **kw)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r'takes images of shape \(B, 1, 16, 16\)'): m.model(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match=r'NULL_LABEL \(-1\); got \[-2\]'): m.model(torch.zeros(2, 1, 16, 16), torch.zeros(2), torch.tensor([-2, 3]))
    # ONNX Runtime alone, no minddpm: the labels arrive as embedding rows, the null label as row 10
    code = (f"import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession({str(path)!r}); "
            f"out = s.run(None, dict(x=np.zeros((3, 1, 16, 16), np.float32), t=np.array([0, 500, 999]), rows=np.array([1, 7, 10])))[0]; "
            f"assert out.shape == (3, 1, 16, 16) and 'minddpm' not in sys.modules; "
            f"print(s.get_modelmeta().custom_metadata_map['minddpm.json'][:9])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.stdout.strip() == '{"config"', out.stderr[-2000:]
    with pytest.raises(ValueError, match="holds the EMA network only"): load_model(path, weights='raw')
    (tmp_path/'broken.onnx').write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match='broken.onnx is not a readable ONNX file'): load_model(tmp_path/'broken.onnx')
