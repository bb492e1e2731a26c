"""Every page of the docs site, opened in a real browser. Quarto cannot run on CI machines, so each processed
notebook of the docs pre-render (`proc`, conftest.py) is rendered to HTML with nbconvert, offline, and opened in
headless Chromium or Chrome (any installed one; `.ci/run` installs Debian's `chromium`; without one these tests skip,
except under CI). The page must show its title, no error output
and every image loaded, and each scrubber's kernel-free player must move to another frame when its slider is
set. Screenshots of the forward-scrubber page (its scrubbers half-way) and the capstone go to `screenshots/`
(gitignored), 7,000 pixels tall, enough for the whole of each.

    python -m pytest tests/test_pages_browser.py    # alone: about a minute after the pre-render"""
import json, re, subprocess

import nbformat
import pytest
import yaml
from nbconvert import HTMLExporter
from traitlets.config import Config

from test_docs import lesson_notebooks
from test_player_browser import chromium
from test_project import ROOT

pytestmark = pytest.mark.xdist_group('docs')   # its slow setup is made once, on one worker

SCREENSHOTS = ROOT/'screenshots'
SHOOT = {'02_forward.ipynb', '16_cifar10.ipynb'}
COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => { if (e.message) window.__errors.push(e.message); });
window.addEventListener('load', () => {
  const h1 = document.querySelector('h1')?.cloneNode(true);
  h1?.querySelectorAll('.anchor-link').forEach(a => a.remove());   // the '¶' link nbconvert adds
  const r = {title: document.title, h1: h1 ? h1.textContent.trim() : null, errors: window.__errors};
  r.images = document.images.length;
  const remote = i => /^https?:/.test(i.src);   // only the Colab badge may come from the web: offline, it cannot load
  r.remote = [...document.images].filter(remote).map(i => i.src);
  r.broken = [...document.images].filter(i => !remote(i) && !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 60));
  r.tracebacks = (document.body.innerText.match(/Traceback \\(most recent call last\\)/g) || []).length;
  r.scrubbers = [...document.querySelectorAll('.minddpm-scrubber')].map(root => {
    const img = root.querySelector('img'), range = root.querySelector('input[type=range]');
    const before = img.src, to = Math.max(1, Math.floor(Number(range.max) / 2));
    range.value = to; range.dispatchEvent(new Event('input'));
    return {frames: Number(range.max) + 1, moved: img.src !== before && Number(range.value) === to, img};
  });
  setTimeout(() => {   // the new frame has had time to decode
    r.scrubbers = r.scrubbers.map(s => ({frames: s.frames, moved: s.moved, shown: s.img.complete && s.img.naturalWidth > 0}));
    document.body.setAttribute('data-results', JSON.stringify(r));
  }, 500);
});
</script>"""

SHOW_SCRUBBER = """<script>
window.addEventListener('load', () => {   // for the screenshot: every scrubber moved half-way through
  document.querySelectorAll('.minddpm-scrubber input[type=range]').forEach(range => {
    range.value = Math.floor(Number(range.max) / 2); range.dispatchEvent(new Event('input'));
  });
});
</script>"""

def source_title(name: str) -> str:
    "The title the lesson gives itself: the `# ` heading of its first markdown cell in nbs/."
    nb = json.loads((ROOT/'nbs'/name).read_text())
    md = next(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    return re.match(r'#\s+(.+)', md).group(1).strip()

def render(nb_path, out_dir, probe: bool = True):
    "The processed notebook as one self-contained HTML page, with its front matter shown as Quarto shows it."
    nb = nbformat.read(nb_path, as_version=4)
    front = next((c for c in nb.cells if c.cell_type == 'raw' and c.source.startswith('---')), None)
    if front is not None:
        meta = yaml.safe_load(front.source.strip().strip('-'))
        nb.metadata['title'] = meta['title']
        front.cell_type, front.source = 'markdown', f"# {meta['title']}\n\n> {meta.get('description', '')}"
        front.pop('attachments', None)
    for c in nb.cells:   # Quarto's cell options: `echo: false` hides the code; no option line is shown
        c.pop('has_sd', None)   # nbdev's own mark of show_doc cells, unknown to nbformat
        if c.cell_type != 'code': continue
        lines = c.source.splitlines()
        if any(re.match(r'#\|\s*echo:\s*false', l) for l in lines): c.metadata.setdefault('tags', []).append('remove_input')
        c.source = '\n'.join(l for l in lines if not l.startswith('#|'))
    config = Config(TagRemovePreprocessor=dict(enabled=True, remove_input_tags=['remove_input']))
    html, _ = HTMLExporter(config=config, template_name='lab', mathjax_url='', require_js_url='').from_notebook_node(nb)
    html = html.replace('<script src=""></script>', '')   # nothing is fetched: the page is checked offline
    if probe: html = html.replace('<head>', '<head>' + PROBE, 1)
    elif 'class="minddpm-scrubber"' in html: html = html.replace('<head>', '<head>' + SHOW_SCRUBBER, 1)
    page = out_dir/(nb_path.stem + '.html')   # beside the notebook, pictures it links to (images/...) resolve as on the site
    page.write_text(html, encoding='utf-8')
    return page

def chrome(page, profile, *args, timeout=180):
    return subprocess.run([chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                           '--disable-background-networking', '--disable-component-update', '--disable-sync',
                           f'--user-data-dir={profile}', *args, page.as_uri()],
                          capture_output=True, text=True, timeout=timeout)

def open_page(page, profile) -> dict:
    "What the probe reports about `page` once loaded in headless Chromium."
    r = chrome(page, profile, '--virtual-time-budget=10000', '--dump-dom')
    m = re.search(r'data-results="([^"]*)"', r.stdout)
    assert m, f"{page.name} reported nothing:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return json.loads(m.group(1).replace('&quot;', '"').replace('&amp;', '&'))

@pytest.mark.parametrize('name', lesson_notebooks())
def test_page_in_a_browser(browser, proc, name, tmp_path):
    res = open_page(render(proc/name, proc), tmp_path/'profile')
    title = source_title(name)
    assert res['title'] == title and res['h1'] == title, f"{name}: title {res['title']!r}, heading {res['h1']!r}"
    assert not res['errors'], f"{name}: script errors {res['errors']}"
    assert not res['tracebacks'], f"{name}: {res['tracebacks']} error outputs on the page"
    assert not res['broken'], f"{name}: images that did not load: {res['broken']}"
    assert set(res['remote']) <= {COLAB_BADGE}, f"{name}: images from the web: {res['remote']}"
    if any(o.get('output_type') == 'display_data' and any(k.startswith('image/') for k in o.get('data', {}))
           for c in nbformat.read(proc/name, 4).cells for o in c.get('outputs', [])):   # a figure, not a Markdown table
        assert res['images'], f"{name}: figures in the notebook, none on the page"
    assert all(s['moved'] and s['shown'] and s['frames'] > 1 for s in res['scrubbers']), f"{name}: {res['scrubbers']}"
    if 'class="minddpm-scrubber"' in (proc/name).read_text(): assert res['scrubbers'], f"{name}: its scrubbers are not on the page"
    if name in SHOOT:   # a picture of the page, for people to look at
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS/(name.replace('.ipynb', '.png'))
        shot.unlink(missing_ok=True)
        chrome(render(proc/name, proc, probe=False), tmp_path/'profile', '--hide-scrollbars',
               '--window-size=1280,7000', '--virtual-time-budget=5000', f'--screenshot={shot}')
        assert shot.exists() and shot.stat().st_size > 20_000, f"no screenshot of {name}"

def test_the_check_sees_a_broken_page(browser, tmp_path):
    "A page with an error output and an image that cannot load fails every check it should."
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_raw_cell('---\ntitle: Broken\ndescription: a page made to fail\n---'),
                nbformat.v4.new_code_cell('1/0', outputs=[nbformat.v4.new_output(
                    'error', ename='ZeroDivisionError', evalue='division by zero',
                    traceback=['Traceback (most recent call last)', 'ZeroDivisionError: division by zero'])]),
                nbformat.v4.new_markdown_cell('<img src="missing.png">')]
    nbformat.write(nb, tmp_path/'broken.ipynb')
    res = open_page(render(tmp_path/'broken.ipynb', tmp_path), tmp_path/'profile')
    assert res['title'] == res['h1'] == 'Broken'
    assert res['tracebacks'] == 1 and len(res['broken']) == 1 and not res['remote']
