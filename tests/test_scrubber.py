"""The scrubber as a user drives it: the live widget under ipywidgets 8 (installed) and 7.7.1 (Colab's),
and the static player's contents and size."""
import os, re, subprocess, sys

import ipywidgets

from minddpm.forward import forward_scrubber
from minddpm.scrubber import Scrubber

FRAMES = {'a': [bytes([i]) * 10 for i in range(5)], 'b': [bytes([100 + i]) * 10 for i in range(5)]}

def test_runs_against_the_expected_ipywidgets():
    "Under the 7.7.1 run below, this pins that the widget tests really ran against 7.7.1."
    assert ipywidgets.__version__ == os.environ.get('EXPECT_IPYWIDGETS', ipywidgets.__version__)

def test_slider_changes_the_image():
    s = Scrubber(FRAMES, [f't = {i}' for i in range(5)])
    s.widget()
    assert s.image.value == FRAMES['a'][0]
    s.slider.value = 3
    assert s.image.value == FRAMES['a'][3] and s.label.value == 't = 3'

def test_play_moves_the_slider():
    s = Scrubber(FRAMES)
    s.widget()
    for tick in (1, 2, 4):  # what the Play button does in the browser: bump its value
        s.play.value = tick
        assert s.slider.value == tick and s.image.value == FRAMES['a'][tick]
    assert s.play.max == s.slider.max == 4

def test_selector_switches_frame_sets():
    s = Scrubber(FRAMES)
    s.widget()
    s.slider.value = 2
    s.selector.value = 'b'
    assert s.image.value == FRAMES['b'][2]

def test_single_set_has_no_selector():
    s = Scrubber(FRAMES['a'])
    s.widget()
    assert s.selector is None

def shown(obj):
    "What Jupyter would display for `obj`: a list of mime bundles."
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display
    from IPython.utils.capture import capture_output
    InteractiveShell.instance()
    with capture_output() as out: display(obj)
    return [o.data for o in out.outputs]

def test_static_player_outside_a_kernel():
    (bundle,) = shown(Scrubber(FRAMES['a']))
    assert bundle['text/html'].count('data:image/png;base64,') == len(FRAMES['a']) + 1

def test_live_widget_inside_a_kernel(monkeypatch):
    import minddpm.scrubber
    monkeypatch.setattr(minddpm.scrubber, '_in_kernel', lambda: True)
    (bundle,) = shown(Scrubber(FRAMES['a']))
    assert 'application/vnd.jupyter.widget-view+json' in bundle and 'text/html' not in bundle

def test_widgets_under_ipywidgets_7(tmp_path):
    "Colab ships ipywidgets 7.7.1: run this file's widget tests again with it first on the path."
    target = tmp_path/'ipywidgets7'
    pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target),
                          'ipywidgets==7.7.1', 'ipython_genutils==0.2.0'], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(target), os.environ.get('PYTHONPATH', '')]),
           'EXPECT_IPYWIDGETS': '7.7.1'}
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', __file__,
                        '-k', 'not forward_player and not ipywidgets_7'], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    selected = [n for n in globals() if n.startswith('test_') and 'forward_player' not in n and 'ipywidgets_7' not in n]
    assert re.search(rf'\b{len(selected)} passed', r.stdout), r.stdout[-500:]   # every one of them ran, none skipped

def test_forward_player_holds_one_frame_per_step_within_budget():
    s = forward_scrubber(steps=30)
    html = s.html()
    assert set(s.frames) == {'linear', 'cosine'}
    assert html.count('data:image/png;base64,') == 2 * 30 + 1
    assert 'http' not in html  # nothing fetched: no CDN, no external image
    assert len(html) < 400_000, f'forward player is {len(html) / 1e3:.0f} kB; the budget is 400 kB'
    assert s.labels[0] == 't = 0' and s.labels[-1] == 't = 999'

def test_a_real_kernel_gets_the_live_widget():
    "In a running ipykernel (as in Colab or Jupyter) the scrubber displays as a live widget, and its slider drives the image."
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name='python3')
    try:
        code = ("from minddpm.scrubber import Scrubber\n"
                "s = Scrubber([bytes([i]) * 8 for i in range(4)], ['a', 'b', 'c', 'd'])\n"
                "display(s)\n"
                "s.slider.value = 2\n"
                "print(s.image.value == bytes([2]) * 8, s.label.value)")
        msg_id = kc.execute(code)
        shown, printed = [], ''
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg['parent_header'].get('msg_id') != msg_id: continue
            kind, content = msg['msg_type'], msg['content']
            if kind == 'display_data': shown.append(content['data'])
            elif kind == 'stream': printed += content['text']
            elif kind == 'error': raise AssertionError('\n'.join(content['traceback']))
            elif kind == 'status' and content['execution_state'] == 'idle': break
        assert shown and 'application/vnd.jupyter.widget-view+json' in shown[0] and 'text/html' not in shown[0]
        assert printed.split() == ['True', 'c']
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

def test_frame_sets_of_other_lengths_and_missing_labels_are_refused():
    import pytest
    with pytest.raises(ValueError, match='same, non-zero number of frames'): Scrubber({'a': [b'1'], 'b': [b'1', b'2']})
    with pytest.raises(ValueError, match='same, non-zero number of frames'): Scrubber([])
    with pytest.raises(ValueError, match='1 labels for 2 frames'): Scrubber([b'1', b'2'], labels=['one'])
