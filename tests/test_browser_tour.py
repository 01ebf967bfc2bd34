"""The guided tour in a real browser: Playwright (the Python package) driving Debian's /usr/bin/chromium.

Walks all the steps on a laptop-wide page (1280 px) and on a phone-wide one (390 px): each "Show me" lands on the
step's tab with the step's widget values (the page-painted forward views at the step's t), runs the tab's network
where the step says so, and each revealed answer equals ``tour.reveal`` computed here from the app's own model.
At 390 px every tab must fit: nothing reaches beyond the right edge (wide tables scroll inside their own box), no
picture lies under its label, no label under a toolbar (at both widths), and the tab's opening sentences show.
The app uses the tiny test checkpoint unless $DDPM_EXPLAINER_CHECKPOINT names one that loads. Every step is
photographed at both widths into a temporary folder; with DDPM_EXPLAINER_SCREENSHOTS=1 and that real model, step 6
(the reverse tab) also becomes docs/screenshots/tour-1280.png and tour-390.png for the README.
"""
from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser import (DESKTOP, PHONE, app_slot, app_threads, assert_labels_clear, assert_labels_uncovered, chromium,
                     choose, load_images, new_page, open_tab, require_browser, screenshot_dir, served, shoot,
                     wait_for_view, wait_until_idle)
from explainer.views import tour

pytestmark = pytest.mark.browser

TAB_NAMES = {"tour": "Tour", "forward": "Forward diffusion", "compare": "Compare schedules",
             "reverse": "Reverse diffusion", "noise": "Subtract all predicted noise", "architecture": "Architecture",
             "lab": "2D lab", "math": "Math"}
# the tour's "<tab>.<widget>" keys and the app's elem_id of each widget
WIDGET_IDS = {"forward.t": "fwd-t", "forward.schedule": "fwd-schedule", "forward.seed": "fwd-seed",
              "compare.t": "cmp-t", "compare.seed": "cmp-seed",
              "reverse.digit": "rev-class", "reverse.guidance": "rev-guidance", "reverse.sampler": "rev-sampler",
              "reverse.steps": "rev-steps", "reverse.schedule": "rev-schedule", "reverse.seed": "rev-seed",
              "reverse.compare": "rev-compare", "reverse.steps_b": "rev-steps-b", "reverse.where": "rev-where",
              "noise.source": "noise-source", "noise.digit": "noise-class", "noise.guidance": "noise-guidance",
              "noise.num_t": "noise-num-t", "noise.seed": "noise-seed",
              "architecture.t": "arch-t", "architecture.digit": "arch-class", "architecture.seed": "arch-seed",
              "lab.data": "lab-data", "lab.t": "lab-t", "lab.sampler": "lab-sampler", "lab.seed": "lab-seed"}
# what a run shows: the picture that changes, and the status line that ends with "Done" (where there is one)
RESULTS = {"reverse": ("rev-a", "rev-status"), "noise": ("noise-grid", None),
           "architecture": ("arch-maps", None), "lab": ("lab-walk", "lab-status")}
README_STEP = 5  # step 6, one reverse step taken apart: the README's picture of the tour
RUN_TIMEOUT_MS = 300_000  # a run of the real model on a CPU

# a widget's shown value: a slider's number box, the checked radio, a dropdown's or number box's text
WIDGET_VALUE = """id => {
    const box = document.getElementById(id);
    if (!box) return null;
    if (box.querySelector('input[type=range]')) return box.querySelector('input[type=number]').value;
    const radios = [...box.querySelectorAll('input[type=radio]')];
    if (radios.length) {
        const on = radios.find(r => r.checked || r.getAttribute('aria-checked') === 'true');
        return on ? on.value : null;
    }
    const input = box.querySelector('input, textarea');
    return input ? input.value : null;
}"""
# visible elements whose visible part reaches beyond the viewport's right edge: each element's box is cut by its
# ancestors that clip or scroll (overflow-x other than visible), so a wide table in a scrolling box is fine
OVERFLOWING = """() => {
    const vw = window.innerWidth, out = [];
    for (const el of document.body.querySelectorAll('*')) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0 || r.right <= vw + 1) continue;
        if (!el.checkVisibility({visibilityProperty: true, opacityProperty: true})) continue;
        let right = r.right;
        for (let p = el.parentElement; p && p !== document.body; p = p.parentElement)
            if (getComputedStyle(p).overflowX !== 'visible') right = Math.min(right, p.getBoundingClientRect().right);
        if (right > vw + 1)
            out.push(`${el.tagName.toLowerCase()}#${el.id}.${String(el.className).split(' ')[0]} ` +
                     `(right edge ${Math.round(right)} px): ${(el.textContent || '').trim().slice(0, 40)}`);
    }
    return out;
}"""
# keep, for each run's picture and status line, the list of the values it has shown (a poll could miss streamed
# ones; an element that a hidden tab drops and shows again adds nothing)
TRACK = """([imgs, texts]) => {
    const ids = [...imgs, ...texts], seen = window.__tourSeen = Object.fromEntries(ids.map(id => [id, []]));
    const value = id => {
        const box = document.getElementById(id), img = box && box.querySelector('img');
        return imgs.includes(id) ? img && img.getAttribute('src') : box && box.textContent.trim();
    };
    const note = () => ids.forEach(id => {
        const v = value(id), list = seen[id];
        if (v && list[list.length - 1] !== v) list.push(v);
    });
    note();
    new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                       attributes: true, attributeFilter: ['src']});
}"""
# a run is done when its status says so and its picture changed, or, for a reverse walk the page computed itself
# (ui/browser.py: it paints its own canvas, not the server's picture), when the status says where it ran
RAN = """([img, status, before]) => {
    const seen = window.__tourSeen, text = status && seen[status][seen[status].length - 1];
    const inPage = !!text && text.includes('computed in your browser');
    return (seen[img].length > before[img] || inPage) && (!status || (seen[status].length > before[status]
                                                                      && text.startsWith('Done')));
}"""


@dataclass
class Tour:
    browser: object
    url: str
    model: object  # the app's model: the revealed answers are computed from it
    shots: Path  # every step's screenshots (a temporary folder)
    readme: Path  # where the README's two go (docs/screenshots only on request, with the real model)


@pytest.fixture(scope="module")
def tour_app(tiny_ckpt, tmp_path_factory):
    require_browser()
    with app_threads():
        slot = app_slot(tiny_ckpt, shipped=False)  # (the real model only where $DDPM_EXPLAINER_CHECKPOINT says)
        readme = screenshot_dir(slot, tiny_ckpt, tmp_path_factory)
        with served(slot) as url, chromium() as browser:
            yield Tour(browser, url, slot.model, tmp_path_factory.mktemp("tour-screenshots"), readme)


def plain(md: str) -> str:
    """Markdown's text as the page shows it (bold marks gone, white space collapsed)."""
    return " ".join(md.replace("**", "").split())


def selected_tab(page) -> str:
    return page.get_by_role("tab", selected=True).inner_text().strip()


def wait_for_tab(page, name: str):
    """Wait until the tab ``name`` is the selected one (its button says so; the others' panels are hidden)."""
    page.get_by_role("tab", name=name, exact=True).and_(page.locator("[aria-selected=true]")).wait_for()
    assert selected_tab(page) == name


def open_page(app: Tour, viewport: dict):
    """A fresh session's page on the tour, watching the pictures and status lines that the runs change."""
    page = new_page(app.browser, app.url, viewport)
    page.locator("#tour-text").get_by_text(tour.STEPS[0].title, exact=True).wait_for()
    page.evaluate(TRACK, [[img for img, _ in RESULTS.values()], [text for _, text in RESULTS.values() if text]])
    return page


def widget_values(page, settings: dict) -> dict:
    return {key: page.evaluate(WIDGET_VALUE, WIDGET_IDS[key]) for key in settings}


def same_value(shown, want) -> bool:
    if shown is None:
        return False
    if isinstance(want, (int, float)):
        try:
            return float(shown) == float(want)
        except ValueError:
            return False
    return shown == str(want)


def wait_for_settings(page, settings: dict, timeout: float = 30.0):
    """Every widget of ``settings`` shows its value (they arrive with "Show me"'s answer from the server)."""
    deadline = time.time() + timeout
    while True:
        shown = widget_values(page, settings)
        if all(same_value(shown[k], v) for k, v in settings.items()) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert {k: v for k, v in shown.items() if not same_value(v, settings[k])} == {}, (settings, shown)


def assert_fits(page, where: str):
    """Nothing reaches beyond the page's right edge, no picture lies under its label, no label under a toolbar."""
    load_images(page)
    width = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"{where}: the page scrolls sideways ({width[0]} px wide in {width[1]} px)"
    assert page.evaluate(OVERFLOWING) == [], f"{where}: elements beyond the right edge"
    assert_labels_clear(page)
    assert_labels_uncovered(page)


def pick_step(page, i: int, how: str):
    """Go to step ``i``: with the Next button (from step i - 1) or the step menu."""
    if how == "next":
        page.locator("#tour-next").click()
    elif how == "previous":
        page.locator("#tour-prev").click()
    else:
        choose(page, "tour-step", tour.STEPS[i].title)
    page.locator("#tour-text").get_by_text(tour.STEPS[i].title, exact=True).wait_for()
    assert page.locator("#tour-step input").input_value() == tour.STEPS[i].title


def walk_step(page, app: Tour, i: int, width: int):
    """Show me, check the tab, the widgets, the painted view and the run; Reveal and check the answer; Back."""
    step = tour.STEPS[i]
    bar = page.locator("#tour-bar").first
    before = page.evaluate("() => Object.fromEntries(Object.entries(window.__tourSeen).map(([k, v]) => "
                           "[k, v.length]))")
    page.locator("#tour-show").click()
    wait_for_tab(page, TAB_NAMES[step.tab])
    page.locator(f"#{step.tab}-intro").wait_for()
    bar.wait_for(timeout=RUN_TIMEOUT_MS)  # (its event may queue behind the last step's run on a busy machine)
    page.locator("#tour-bar-question").get_by_text(step.question).wait_for()
    wait_for_settings(page, step.settings)
    if step.tab in ("forward", "compare"):  # the page paints these itself: they must follow the new t
        want = {"t": str(step.settings[f"{step.tab}.t"])}
        if "forward.schedule" in step.settings:
            want["schedule"] = step.settings["forward.schedule"]
        wait_for_view(page, step.tab, **want)
    if step.run:
        page.wait_for_function(RAN, arg=[*RESULTS[step.tab], before], timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page, RUN_TIMEOUT_MS)
    page.locator("#tour-bar-reveal").click()
    answer = page.locator("#tour-bar-answer")
    answer.locator("strong").first.wait_for(timeout=RUN_TIMEOUT_MS)
    want = tour.reveal(i, app.model)
    assert answer.locator("strong").all_inner_texts() == re.findall(r"\*\*(.+?)\*\*", want)
    assert plain(answer.inner_text()) == plain(want)
    if width == PHONE["width"]:
        assert_fits(page, f"step {i + 1} on a phone")
    else:
        assert_labels_clear(page)
        assert_labels_uncovered(page)
    name = f"tour-{i + 1:02d}-{width}"
    shoot(page, app.shots, name)
    if i == README_STEP:
        app.readme.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(app.shots / f"{name}.png", app.readme / f"tour-{width}.png")
    page.locator("#tour-bar-back").click()
    wait_for_tab(page, "Tour")
    bar.wait_for(state="hidden")
    page.locator("#tour-text").get_by_text(step.title, exact=True).wait_for()


def test_every_setting_has_a_widget_in_the_page():
    assert set(tour.setting_keys()) <= set(WIDGET_IDS)
    assert {s.tab for s in tour.STEPS} <= set(TAB_NAMES) and set(tour.TAB_INTROS) <= set(TAB_NAMES)


def test_the_whole_tour_on_a_laptop(tour_app):
    page = open_page(tour_app, DESKTOP)
    assert selected_tab(page) == "Tour"
    assert not page.locator("#tour-bar").first.is_visible()  # hidden until "Show me"
    for i in range(len(tour.STEPS)):
        if i:
            pick_step(page, i, "next")
        walk_step(page, tour_app, i, DESKTOP["width"])
    pick_step(page, len(tour.STEPS) - 1, "next")  # Next stops at the last step
    pick_step(page, len(tour.STEPS) - 2, "previous")
    page.close()


def test_the_whole_tour_on_a_phone(tour_app):
    page = open_page(tour_app, PHONE)
    assert_fits(page, "the tour")
    for i in range(len(tour.STEPS)):
        if i:
            pick_step(page, i, "menu")
        walk_step(page, tour_app, i, PHONE["width"])
    page.close()


def test_every_tab_fits_a_phone_and_opens_with_its_intro(tour_app):
    page = open_page(tour_app, PHONE)
    for tab, name in TAB_NAMES.items():
        open_tab(page, name)
        wait_for_tab(page, name)
        intro = page.locator(f"#{tab}-intro")
        intro.wait_for()
        assert intro.inner_text().strip(), tab
        if tour.TAB_INTROS.get(tab):
            assert plain(intro.inner_text()) == plain(tour.TAB_INTROS[tab])
        box = intro.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, tab
        wait_until_idle(page)
        time.sleep(0.3)  # (pictures arriving with the tab)
        assert_fits(page, name)
    page.close()
