"""The demo (`minddpm.demo`, `minddpm_demo`): the batcher samples concurrent requests together and gives each the images
it gets alone; the real command, started on a loopback port, answers `gradio_client` with one image per class equal to
`sample`'s, byte-identical PNGs for a repeated request, and a message for each bad input, without a traceback in its
log; in headless Chromium the page draws the images after the button is pressed and asks nothing of another host (a
screenshot goes to `screenshots/demo.png`)."""
import dataclasses, io, os, re, socket, subprocess, sys, threading, time
from importlib import resources
from pathlib import Path

import pytest
import torch

from minddpm.cli import minddpm_demo
from minddpm.demo import Batcher, DEMO_SAMPLERS, grid_png, parse_request, _gradio
from minddpm.sampling import sample
from minddpm.training import load_model
from test_project import ROOT

SHIPPED = resources.files('minddpm.assets') / 'digits_tiny.pt'

@pytest.fixture(scope='module')
def m(): return load_model()

def alone(m, r, precision='auto'):
    "What `sample` draws for request `r` by itself, as uint8."
    return sample(m.model, m.diffusion, torch.full((r.n,), r.label), shape=m.shape, sampler=r.sampler, steps=r.steps, w=r.w,
                  eta=0.0, generator=torch.Generator().manual_seed(r.seed), uint8=True, precision=precision)

def test_waiting_requests_that_share_a_loop_are_sampled_together_with_the_images_they_get_alone(m):
    b = Batcher(m, max_rows=32, precision='fp32')
    reqs = [parse_request(m.classes, d, n=2, w=3, steps=5, seed=d) for d in range(6)]   # 4 rows each: 8 fit in 32
    reqs += [parse_request(m.classes, 1, n=2, w=1, steps=5, seed=9),                      # another w: another loop
             parse_request(m.classes, 2, n=3, w=3, sampler='ddim', steps=5, seed=9)]      # another sampler: another loop
    with b._cv: queues = [b.submit(r) for r in reqs]   # all waiting before the batcher's thread sees any
    results = []
    for q in queues:
        while (event := q.get(timeout=60))[0] == 'step': steps_seen = event[1]
        assert event[0] == 'done', event
        results.append(event)
    b.close()
    assert b.batches == [6, 1, 1]
    assert [info['requests'] for _, _, info in results] == [6] * 6 + [1, 1] and results[0][2]['rows'] == 24
    for r, (_, images, _) in zip(reqs, results):
        assert images.dtype == torch.uint8 and images.shape == (r.n, *m.shape)
        assert torch.equal(images, alone(m, r, 'fp32')), r

def test_each_step_streams_the_requests_rows_of_x_t_and_x0_as_the_sampling_loop_yields_them(m):
    "The batcher iterates lesson 05's `denoise_steps`: a request's 'step' events are its rows of `sample`'s trajectory, as uint8."
    from minddpm.data import to_uint8
    r = parse_request(m.classes, 4, n=2, w=3, steps=6, seed=11)
    b = Batcher(m, precision='fp32')
    events = list(b.events(r))
    b.close()
    traj = []
    images = sample(m.model, m.diffusion, torch.full((2,), 4), shape=m.shape, sampler='dpm++', steps=6, w=3.0, eta=0.0,
                    generator=torch.Generator().manual_seed(11), uint8=True, trajectory=traj)
    steps = [e for e in events if e[0] == 'step']
    assert [e[1:3] for e in steps] == [(i + 1, 6) for i in range(len(traj))] and events[-1][0] == 'done'
    for (_, _, _, x, x0), (t, xt, x0t) in zip(steps, traj):
        assert torch.equal(x, to_uint8(xt)) and torch.equal(x0, to_uint8(x0t))
    assert torch.equal(events[-1][1], images)

def test_max_rows_splits_a_crowd_and_a_sampling_error_reaches_each_request_and_not_the_next(m):
    b = Batcher(m, max_rows=32, precision='fp32')
    reqs = [parse_request(m.classes, d % 10, n=4, steps=2, seed=d) for d in range(9)]    # 8 rows each: 4 per loop
    with b._cv: queues = [b.submit(r) for r in reqs]
    for q in queues:
        while q.get(timeout=60)[0] == 'step': pass
    assert b.batches == [4, 4, 1]
    b.close()
    with pytest.raises(RuntimeError, match='closed'): b.submit(reqs[0])

    calls = []
    def flaky(x, t, y):   # a network that fails once, in the middle of a loop
        calls.append(len(x))
        if len(calls) == 2: raise RuntimeError('the network failed')
        return m.model(x, t, y)
    b = Batcher(dataclasses.replace(m, model=flaky), precision='fp32')
    with b._cv: queues = [b.submit(r) for r in reqs[:2]]
    for q in queues:
        while (event := q.get(timeout=60))[0] == 'step': pass
        assert event[0] == 'error' and 'the network failed' in str(event[1])
    images, info = b(reqs[2])                     # and the next request is served
    assert torch.equal(images, alone(m, reqs[2], 'fp32')) and info['requests'] == 1
    b.close()

def test_the_batcher_checks_its_settings(m):
    with pytest.raises(ValueError, match='max_rows must be at least 32'): Batcher(m, max_rows=31)
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"): Batcher(m, precision='fp16')
    assert DEMO_SAMPLERS == ('dpm++', 'ddim')

def test_without_gradio_the_demo_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'gradio', None)
    with pytest.raises(ImportError, match=r'pip install "minddpm\[demo\]"'): _gradio()
    with pytest.raises(SystemExit) as e: minddpm_demo([])
    assert e.value.code == 2 and 'pip install "minddpm[demo]"' in capsys.readouterr().err

def test_the_command_refuses_bad_options_before_serving(tmp_path, capsys):
    for argv, says in [(['--port', '70000'], 'must be at most 65535'), (['--port', 'x'], "must be a whole number, got 'x'"),
                       (['--max-rows', '8'], 'must be at least 32'), ([str(tmp_path/'missing.pt')], 'missing.pt'),
                       (['--auth-file', str(tmp_path/'none')], '--auth-file: ' + str(tmp_path/'none') + ' is not a file of user:password lines')]:
        with pytest.raises(SystemExit) as e: minddpm_demo(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and 'Traceback' not in err, (argv, err)

def test_a_taken_port_or_an_unknown_host_is_refused_in_the_commands_terms(capsys):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0)); taken.listen()
        port = taken.getsockname()[1]
        for argv, says in [(['--port', str(port)], f'cannot serve on 127.0.0.1:{port} (Address already in use): give another --port'),
                           (['--host', 'no-such-host.invalid', '--port', str(port)], 'cannot serve on no-such-host.invalid')]:
            with pytest.raises(SystemExit) as e: minddpm_demo(argv)
            err = capsys.readouterr().err
            assert e.value.code == 2 and says in err and 'GRADIO_SERVER_PORT' not in err and 'Traceback' not in err, err

def test_serving_beyond_this_machine_without_a_login_is_said(capsys):
    "On 0.0.0.0 with no --auth-file, a warning says the model is open to anyone (here before the taken port stops it)."
    with socket.socket() as taken:
        taken.bind(('0.0.0.0', 0)); taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit): minddpm_demo(['--host', '0.0.0.0', '--port', str(port)])
    err = capsys.readouterr().err
    assert 'minddpm_demo: warning: 0.0.0.0 serves the model to anyone who reaches it, with no login; --auth-file' in err, err

# ---- the real command on a loopback port ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "`minddpm_demo` (the shipped model) on a free loopback port: (url, log file); stopped after the module's tests."
    port, log = free_port(), tmp_path_factory.mktemp('demo')/'server.log'
    with open(log, 'w') as out:
        p = subprocess.Popen([sys.executable, '-c', 'from minddpm.cli import minddpm_demo; minddpm_demo()', '--port', str(port),
                              '--precision', 'fp32'], stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                             env={**os.environ, 'OMP_NUM_THREADS': '1'})
    url = f'http://127.0.0.1:{port}/'
    import httpx
    for _ in range(240):
        try:
            if httpx.get(url, timeout=2).status_code == 200: break
        except httpx.HTTPError: pass
        assert p.poll() is None, f"minddpm_demo exited:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    else: pytest.fail(f"minddpm_demo did not answer within 2 minutes:\n{log.read_text()[-3000:]}")
    yield url, log
    p.terminate(); p.wait(timeout=30)

@pytest.fixture(scope='module')
def client(server):
    from gradio_client import Client
    return Client(server[0], verbose=False)

def test_the_api_draws_each_class_as_sample_does_and_repeats_byte_for_byte(server, client, m):
    for label in range(10):
        r = parse_request(m.classes, label, n=2, w=3, steps=8, seed=label)
        png = Path(client.predict(str(label), 2, 3.0, 8, label, api_name='/png')).read_bytes()
        assert png == grid_png(alone(m, r, 'fp32')), label          # the server's images are sample()'s
    first = Path(client.predict('7', 3, 2.5, 10, 123, 'ddim', api_name='/png')).read_bytes()
    with __import__('concurrent.futures').futures.ThreadPoolExecutor(4) as pool:   # alone, or batched with others
        again = list(pool.map(lambda s: Path(client.predict('7', 3, 2.5, 10, s, 'ddim', api_name='/png')).read_bytes(),
                              [123, 1, 2, 123]))
    assert again[0] == first and again[3] == first and again[1] != first
    from PIL import Image
    assert Image.open(io.BytesIO(first)).size == (3 * 17 + 1, 18)    # three 16×16 images, 1-pixel borders

def test_bad_requests_get_a_message_and_the_server_serves_on(server, client):
    from gradio_client.exceptions import AppError
    bad = [(('12', 1, 3.0, 10, 0), "unknown class '12'"), (('seven', 1, 3.0, 10, 0), "unknown class 'seven'"),
           (('1', 0, 3.0, 10, 0), 'n must be a whole number from 1 to 16'), (('1', 17, 3.0, 10, 0), 'n must be'),
           (('1', 1, 3.0, 0, 0), 'steps must be a whole number from 1 to 100'), (('1', 1, 3.0, 101, 0), 'steps must be'),
           (('1', 1, 'strong', 10, 0), "w must be a number from 0 to 20, got 'strong'"), (('1', 1, 'nan', 10, 0), 'w must be'),
           (('1', 1, 3.0, 10, -1), 'seed must be a whole number from 0 to 2147483647, got -1'), (('²', 1, 3.0, 10, 0), "unknown class '²'"), (('1', 1, 3.0, 10, 0, 'ddpm'), "unknown sampler 'ddpm'")]
    for args, says in bad:
        with pytest.raises(AppError, match=re.escape(says)): client.predict(*args, api_name='/png')
    with pytest.raises(AppError, match='n must be a whole number from 1 to 16, got 99'):
        client.predict('3', 99, 3.0, 'dpm++', 10, 0, api_name='/sample')
    with pytest.raises(AppError, match='steps must be a whole number from 1 to 100, got 2.5'):
        client.predict('3', 2, 3.0, 'dpm++', 2.5, 0, api_name='/sample')
    with pytest.raises(AppError, match='seed must be'): client.predict('3', 2, 3.0, 'dpm++', 10, -3, api_name='/sample')
    with pytest.raises(AppError, match="unknown class 'twelve'"): client.predict('twelve', 2, 3.0, 'dpm++', 10, 0, api_name='/sample')
    with pytest.raises(AppError, match="unknown sampler 'euler'"): client.predict('3', 2, 3.0, 'euler', 10, 0, api_name='/sample')
    job = client.submit('3', 2, 3.0, 'dpm++', 10, 4, api_name='/sample')   # serves on, streaming each network call
    grid, trajectory, caption = job.result()
    assert [o[2] for o in job.outputs()[:-1]] == [f'network call {i} of 10 …' for i in range(1, 11)]
    assert re.fullmatch(r"2 × class '3': dpm\+\+, 10 steps, w = 3, seed 4; [\d.]+ s", caption), caption
    from PIL import Image
    assert Image.open(grid).size == (8 * (2 * 17 + 1), 8 * 18) and Image.open(trajectory).size == (4 * (8 * 17 + 1), 4 * 35)
    log = server[1].read_text()
    assert 'Traceback' not in log and 'Error' not in log, log[-3000:]

def test_the_page_draws_the_images_after_the_button_and_loads_nothing_from_other_hosts(server, browser):
    from playwright.sync_api import sync_playwright
    url = server[0]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=['--no-sandbox', '--disable-gpu'])
        page = b.new_page(viewport={'width': 1200, 'height': 900})
        seen = []
        page.on('request', lambda r: seen.append(r.url))
        page.goto(url, wait_until='networkidle')
        drawn = """([w, h]) => [...document.images].some(i => i.complete && i.naturalWidth === w && i.naturalHeight === h)"""
        assert not page.evaluate(drawn, [8 * (4 * 17 + 1), 8 * 18])                          # no grid before the button
        page.get_by_role('button', name='Sample').click()
        page.get_by_text(re.compile(r"4 × class '0': dpm\+\+, 20 steps, w = 3, seed 0; [\d.]+ s")).wait_for(timeout=60_000)
        page.wait_for_function(drawn, arg=[8 * (4 * 17 + 1), 8 * 18], timeout=30_000)      # the grid of four, enlarged 8×
        page.wait_for_function(drawn, arg=[4 * (8 * 17 + 1), 4 * (2 * 17 + 1)], timeout=30_000)  # the trajectory
        (ROOT/'screenshots').mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT/'screenshots'/'demo.png'), full_page=True)
        page.get_by_label('seed').fill('-5')                          # a bad value typed in the page
        page.get_by_role('button', name='Sample').click()
        page.get_by_text(re.compile('seed must be a whole number from 0')).first.wait_for(timeout=30_000)
        b.close()
    remote = [u for u in seen if not u.startswith(url) and not u.startswith('data:') and not u.startswith('blob:')]
    assert not remote, remote

def test_the_two_step_http_call_of_the_lesson_returns_the_same_png(server, client):
    "Lesson 12's curl example, over plain HTTP: post all six values, read the answer, fetch the PNG it names."
    import httpx, json
    url = server[0]
    event = httpx.post(url + 'gradio_api/call/png', json={'data': ['7', 4, 3.0, 20, 0, 'dpm++']}, timeout=60).json()['event_id']
    answer = httpx.get(url + f'gradio_api/call/png/{event}', timeout=120).text
    data = json.loads(next(line[6:] for line in answer.splitlines() if line.startswith('data: ')))
    png = httpx.get(data[0]['url'], timeout=60).content
    assert png == Path(client.predict('7', 4, 3.0, 20, 0, api_name='/png')).read_bytes() and png[:8] == b'\x89PNG\r\n\x1a\n'
    # the class alone: the server fills in the defaults, as gradio_client does
    event = httpx.post(url + 'gradio_api/call/png', json={'data': ['7']}, timeout=60).json()['event_id']
    answer = httpx.get(url + f'gradio_api/call/png/{event}', timeout=120).text
    assert httpx.get(json.loads(answer.strip().splitlines()[-1][6:])[0]['url'], timeout=60).content == png
    r = httpx.post(url + 'gradio_api/call/png', json={'data': []}, timeout=60)
    assert r.status_code == 422 and r.json()['error'].startswith('/png takes {"data": [class, n, w, steps, seed, sampler]}'), r.text
    log = server[1].read_text()
    assert f'minddpm_demo: serving at {url}' in log and '--share for a public link' in log and 'share=True' not in log, log

def test_with_an_auth_file_the_api_asks_for_a_login(tmp_path):
    "`--auth-file`: a call without the login is refused; with it, the same PNG as anywhere else."
    from gradio_client import Client
    import httpx
    (tmp_path/'logins').write_text('ada:s3cret\n')
    port, log = free_port(), tmp_path/'server.log'
    with open(log, 'w') as out:
        p = subprocess.Popen([sys.executable, '-c', 'from minddpm.cli import minddpm_demo; minddpm_demo()', '--port', str(port),
                              '--precision', 'fp32', '--auth-file', str(tmp_path/'logins')], stdout=out, stderr=subprocess.STDOUT,
                             cwd=tmp_path, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    url = f'http://127.0.0.1:{port}/'
    try:
        for _ in range(240):
            try:
                if httpx.get(url, timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            assert p.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        r = httpx.post(f'{url}gradio_api/call/png', json={'data': ['3', 1, 3.0, 5, 0, 'dpm++']}, timeout=30)
        assert r.status_code in (401, 403), (r.status_code, r.text[:300])
        png = Path(Client(url, auth=('ada', 's3cret'), verbose=False).predict('3', 1, 3.0, 5, 0, api_name='/png')).read_bytes()
        assert png[:8] == b'\x89PNG\r\n\x1a\n'
        assert 's3cret' not in log.read_text()
    finally:
        p.terminate(); p.wait(timeout=30)
