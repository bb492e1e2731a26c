"""The static scrubber player in a real browser with no kernel: headless Chromium or Chrome (any installed one;
`.ci/run` installs Debian's `chromium`) loads a page holding the forward scrubber, moves the slider, switches
schedule and presses play, and reports what the page then shows. Without a browser these tests skip, saying how to
get one, except under CI (`CI=true`), where a missing browser fails."""
import json, os, re, shutil, subprocess

import pytest

from minddpm.forward import forward_scrubber

DRIVER = """
<script>
window.addEventListener('load', () => {
  const root = document.querySelector('.minddpm-scrubber');
  const img = root.querySelector('img'), range = root.querySelector('input[type=range]');
  const caption = root.querySelector('.caption'), button = root.querySelector('button'), select = root.querySelector('select');
  const r = {frames: Number(range.max) + 1, loaded: img.complete && img.naturalWidth > 0, first: caption.textContent};
  const src0 = img.src;
  range.value = 12; range.dispatchEvent(new Event('input'));
  r.scrubbed = img.src !== src0; r.caption = caption.textContent;
  const src12 = img.src;
  select.value = 'cosine'; select.dispatchEvent(new Event('change'));
  r.switched = img.src !== src12 && Number(range.value) === 12;
  button.click();
  setTimeout(() => {
    r.played_to = Number(range.value); r.playing_caption = caption.textContent; button.click();
    r.stopped_at = Number(range.value);
    setTimeout(() => {
      r.still_at = Number(range.value);
      document.body.setAttribute('data-results', JSON.stringify(r));
    }, 1000);
  }, 1000);
});
</script>
"""

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome')
MACOS = ('/Applications/Chromium.app/Contents/MacOS/Chromium', '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome')

def chromium() -> str:
    "The browser to drive: $CHROME, else the first Chromium or Chrome installed. None: skip, or fail under CI."
    found = [os.environ.get('CHROME')] + [shutil.which(name) for name in BROWSERS] + [p for p in MACOS if os.path.exists(p)]
    exe = next((f for f in found if f), None)
    if exe: return exe
    why = ("this test needs a browser: `apt-get install -y chromium` (Debian's package; .ci/run installs it), "
           "or set $CHROME to a Chromium or Chrome")
    if os.environ.get('CI', '').lower() in ('true', '1', 'yes'): pytest.fail(why)
    pytest.skip(why)

def test_static_player_scrubs_and_plays_without_a_kernel(browser, tmp_path):
    s = forward_scrubber(steps=30)
    page = tmp_path/'player.html'
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>player</title></head>'
                    f'<body>{s.html()}{DRIVER}</body></html>', encoding='utf-8')
    r = subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                        '--disable-background-networking', '--disable-component-update', '--disable-sync',
                        f'--user-data-dir={tmp_path/"profile"}', '--virtual-time-budget=10000', '--dump-dom',
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"data-results=\"([^\"]*)\"", r.stdout)
    assert m, f"the page reported nothing:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    res = json.loads(m.group(1).replace('&quot;', '"'))
    assert res['frames'] == 30 and res['loaded'] and res['first'] == 't = 0'
    assert res['scrubbed'] and res['caption'] == s.labels[12]  # the slider moved the picture and the caption
    assert res['switched']                                      # the schedule selector swapped the frame set
    assert res['played_to'] != 12 and res['playing_caption'] == s.labels[res['played_to']]  # play advanced frames
    assert res['still_at'] == res['stopped_at']                 # and pressing it again stopped them

def test_a_missing_browser_skips_except_under_ci(monkeypatch):
    import test_player_browser as here
    monkeypatch.delenv('CHROME', raising=False)
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    monkeypatch.setattr(here, 'MACOS', ())
    monkeypatch.delenv('CI', raising=False)
    with pytest.raises(pytest.skip.Exception, match='needs a browser: `apt-get install -y chromium`'): chromium()
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception, match='needs a browser'): chromium()
    monkeypatch.setenv('CHROME', '/opt/my/chrome')
    assert chromium() == '/opt/my/chrome'
