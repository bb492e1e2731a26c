# %%
#| default_exp scrubber

# %% [markdown]
# # Scrubber
# > A slider over precomputed frames: a live widget inside a running kernel, a self-contained HTML player everywhere else

# %%
#| export
from __future__ import annotations
import base64, hashlib, html as html_lib, io, itertools, json

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
from matplotlib.animation import FuncAnimation
import matplotlib.pyplot as plt
import numpy as np
import re


# %% [markdown]
# The forward and reverse lessons both want the same thing: drag a slider over the timesteps and
# watch the images change. That is harder than it sounds, because the lessons are read in three places:
#
# - **Colab**, whose runtime still ships ipywidgets 7.7.1 (installing 8.x there breaks its core widgets).
#   `jslink` between widgets has broken there; `link` works. Redrawing a matplotlib figure into an
#   `Output` widget on every slider move flickers and lags.
# - **Jupyter** with ipywidgets 8.
# - **The docs site**, rendered by Quarto with no kernel behind it. Saved widget state shows up as a
#   dead snapshot or not at all.
#
# What works everywhere: render every frame once, up front, as PNG bytes. Inside a kernel, an `Image`
# widget shows a frame and the slider's callback just swaps `image.value`; nothing is redrawn. Outside a
# kernel, the same PNGs go into a small HTML player: frames as data URIs, a range input, a play button
# and a few lines of JavaScript, with nothing loaded from a CDN. One object chooses the view.

# %%
#| export
def fig_to_png(fig,                    # the matplotlib figure to render
               dpi: int | None = None, # dots per inch; None: matplotlib's `savefig.dpi` (by default the figure's)
               ) -> bytes:
    "PNG bytes of a matplotlib figure, reduced to a 64-colour palette (lessons' frames are grey images and a few lines)."
    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight', pad_inches=0.02)
    img = Image.open(buf).convert('RGB').quantize(colors=64)
    out = io.BytesIO()
    img.save(out, format='png', optimize=True)
    return out.getvalue()

def _in_kernel() -> bool:
    "Is this code running inside a Jupyter kernel (Colab, JupyterLab, VS Code), where widgets are live?"
    try: from IPython import get_ipython
    except ImportError: return False
    return getattr(get_ipython(), 'kernel', None) is not None


# %% [markdown]
# ### The static player
#
# The HTML carries every frame as a `data:image/png;base64,…` URI in a JSON object, so it needs no
# kernel, no files and no network. A range input picks the frame, a button starts and stops a timer that
# advances it, and a selector switches frame sets; each player gets its own id, so several can share a page.

# %%
#| export
_PLAYER_JS = """
(() => {
  const root = document.getElementById(__ID__), sets = __SETS__, labels = __LABELS__;
  const img = root.querySelector('img'), range = root.querySelector('input[type=range]');
  const caption = root.querySelector('.caption'), button = root.querySelector('button'), select = root.querySelector('select');
  let timer = null;
  const show = () => {
    const i = Number(range.value);
    img.src = sets[select ? select.value : Object.keys(sets)[0]][i];
    caption.textContent = labels[i];
  };
  const stop = () => { clearInterval(timer); timer = null; button.textContent = '▶'; };
  range.addEventListener('input', show);
  if (select) select.addEventListener('change', show);
  button.addEventListener('click', () => {
    if (timer) return stop();
    button.textContent = '❚❚';
    timer = setInterval(() => { range.value = (Number(range.value) + 1) % labels.length; show(); }, __INTERVAL__);
  });
})();
"""

# %%
#| export
_player_ids = itertools.count()

def _player_html(frames: dict, labels: list, title: str, interval: int) -> str:
    "A self-contained HTML player of `frames` ({name: PNG bytes per step}), captioned by `labels`."
    digest = hashlib.sha1(b''.join(f for fs in frames.values() for f in fs)).hexdigest()[:8]
    uid = f'minddpm-scrubber-{digest}-{next(_player_ids)}'  # unique on a page, and the same on every run
    uri = lambda png: 'data:image/png;base64,' + base64.b64encode(png).decode()
    sets = {name: [uri(f) for f in fs] for name, fs in frames.items()}
    first = next(iter(sets.values()))[0]
    select = ''
    if len(sets) > 1:
        options = ''.join(f'<option value="{html_lib.escape(n)}">{html_lib.escape(n)}</option>' for n in sets)
        select = f'<select aria-label="frame set">{options}</select>'
    heading = f'<div><b>{html_lib.escape(title)}</b></div>' if title else ''
    fill = {'__ID__': json.dumps(uid), '__SETS__': json.dumps(sets), '__LABELS__': json.dumps(labels), '__INTERVAL__': str(interval)}
    js = _PLAYER_JS
    for key, value in fill.items(): js = js.replace(key, value)
    return (f'<div id="{uid}" class="minddpm-scrubber">{heading}'
            f'<div style="display:flex;gap:.5em;align-items:center"><button type="button" aria-label="play">▶</button>'
            f'<input type="range" min="0" max="{len(labels) - 1}" value="0" step="1" aria-label="step" style="flex:1;max-width:24em">'
            f'<span class="caption">{html_lib.escape(labels[0])}</span>{select}</div>'
            f'<img src="{first}" alt="{html_lib.escape(title or "frame")}" style="max-width:100%"></div>'
            f'<script>{js}</script>')


# %% [markdown]
# ### The live widget, and one object for both
#
# Only API that ipywidgets 7.7 and 8 share: `Image(format='png')`, `IntSlider`, `Play` joined to the
# slider with `link` (Python-side, so it also works where `jslink` does not), `Label`, and
# `ToggleButtons` to switch frame sets. The slider's observer swaps the image bytes. `Scrubber` holds the
# frames and offers both views: `widget()` and `html()`; displayed, it picks the live one inside a kernel.
# Its arguments are checked by `_frame_sets`, in a hidden cell (`minddpm/scrubber.py` shows it).

# %%
#| hide
#| export
def _frame_sets(frames, labels) -> tuple[dict, list]:
    "({name: PNG bytes per step}, a caption per step) from `Scrubber`'s arguments, or a `ValueError` saying what is wrong."
    frames = dict(frames) if isinstance(frames, dict) else {'': list(frames)}
    lengths = {len(v) for v in frames.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"every frame set needs the same, non-zero number of frames; got {sorted(lengths)}")
    n = lengths.pop()
    labels = [str(l) for l in labels] if labels is not None else [str(i) for i in range(n)]
    if len(labels) != n: raise ValueError(f"{len(labels)} labels for {n} frames")
    return frames, labels

# %%
#| export
class Scrubber:
    "Frames to slide through: a live ipywidget in a kernel, a self-contained HTML player elsewhere."
    def __init__(self, frames,           # PNG bytes per step; or {name: PNG bytes per step} to switch between
                 labels=None,            # a caption per step (default: the step number)
                 title: str = '',        # shown above the controls
                 interval: int = 120):   # milliseconds per frame when playing
        self.frames, self.labels = _frame_sets(frames, labels)
        self.n, self.title, self.interval = len(self.labels), title, interval

    def _ipython_display_(self):
        from IPython.display import HTML, display
        display(self.widget() if _in_kernel() else HTML(self.html()))

    def html(self) -> str:
        "The static view: a self-contained HTML player (no kernel, no CDN) with a slider, a play button and a selector."
        return _player_html(self.frames, self.labels, self.title, self.interval)

    def widget(self):
        "The live view: image, slider, play button, caption, and a selector when there are several frame sets."
        import ipywidgets as W
        names = list(self.frames)
        self.image = W.Image(value=self.frames[names[0]][0], format='png')
        self.slider = W.IntSlider(value=0, min=0, max=self.n - 1, readout=False, continuous_update=True)
        self.play = W.Play(value=0, min=0, max=self.n - 1, interval=self.interval)
        W.link((self.play, 'value'), (self.slider, 'value'))
        self.label = W.Label(self.labels[0])
        self.selector = W.ToggleButtons(options=names) if len(names) > 1 else None
        def show(_=None):
            self.image.value = self.frames[self.selector.value if self.selector else names[0]][self.slider.value]
            self.label.value = self.labels[self.slider.value]
        self.slider.observe(show, names='value')
        if self.selector: self.selector.observe(show, names='value')
        controls = [self.play, self.slider, self.label] + ([self.selector] if self.selector else [])
        return W.VBox(([W.HTML(f'<b>{html_lib.escape(self.title)}</b>')] if self.title else []) + [W.HBox(controls), self.image])


# %%
show_doc(Scrubber.widget)

# %%
show_doc(Scrubber.html)

# %% [markdown]
# ### A first scrubber
#
# A toy: a wave whose phase moves, 24 frames, in two colours to switch between. Like every scrubber
# cell, it carries `#| exec_doc`, so the docs build re-runs it without a kernel and the page gets the
# static player rather than a dead widget.

# %%
#| exec_doc
x = np.linspace(0, 2 * np.pi, 200)
def wave_frames(color):
    fig, ax = plt.subplots(figsize=(3, 1.2))
    line, = ax.plot(x, np.sin(x), color=color); ax.set_ylim(-1.1, 1.1); ax.axis('off')
    frames = []
    for phase in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        line.set_ydata(np.sin(x + phase)); frames.append(fig_to_png(fig, dpi=60))
    plt.close(fig)
    return frames

waves = Scrubber({'blue': wave_frames('C0'), 'orange': wave_frames('C1')},
                 [f'phase {i * 15}°' for i in range(24)], title='a travelling wave')
waves

# %%
#| hide
w = waves.widget()
first = waves.image.value
waves.slider.value = 6
test_eq(waves.image.value, waves.frames['blue'][6])
assert waves.image.value != first
waves.play.value = 9                  # a tick of the play button
test_eq(waves.slider.value, 9)
test_eq(waves.label.value, 'phase 135°')
waves.selector.value = 'orange'
test_eq(waves.image.value, waves.frames['orange'][9])

# %% [markdown]
# The player holds one frame per step per set (plus the first frame as the image's initial source),
# and against matplotlib's `to_jshtml` for the same 24 frames it is several times smaller and loads nothing
# from the network (`to_jshtml` fetches its button icons from a CDN):

# %%
fig, ax = plt.subplots(figsize=(3, 1.2))
line, = ax.plot(x, np.sin(x)); ax.set_ylim(-1.1, 1.1); ax.axis('off')
anim = FuncAnimation(fig, lambda p: line.set_ydata(np.sin(x + p)), frames=np.linspace(0, 2 * np.pi, 24, endpoint=False))
jshtml = anim.to_jshtml(fps=8, default_mode='loop')
plt.close(fig)
one_set = Scrubber(waves.frames['blue']).html()
links = re.findall(r'https?://[^"\s]+', jshtml)
print(f"static player: {len(one_set) / 1024:.0f} kB;  to_jshtml: {len(jshtml) / 1024:.0f} kB "
      f"({len(jshtml) / len(one_set):.1f}× larger), and it links {links}")
test_eq(one_set.count('data:image/png;base64,'), 24 + 1)
assert 'http' not in one_set
assert len(jshtml) > 3 * len(one_set)
