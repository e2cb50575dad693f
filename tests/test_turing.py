"""The human Turing test (gan_common.turing; python -m gan_{jax,torch}.turing): the trial plan, the score (the fool
rate and its exact Clopper-Pearson interval), the server's validation of answers (each refused request leaves the
results file byte-identical), the report and the flags; then end to end: a headless Chromium answering a 10-trial
session of gan_jax's CLI with clicks and keys, in two tabs, the page's final score checked against the results file;
and gan_torch's CLI serving the page, the planned images and an answer.

The unit tests serve a Session around a stand-in generator (the server never looks at what G draws) and need no
framework. The browser test needs selenium and Debian's chromium and chromium-driver: without them it skips, but
with GAN_REQUIRE_BROWSER=1 (as .ci/run sets) it fails.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from gan_common import turing
from gan_common.config import Config
from gan_common.datasets import load_dataset
from gan_common.errors import cli_entry
from gan_common.outputs import to_uint8
from gan_common.sampling import sample_noise


def fake_generate(z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Stands in for G where what it draws does not matter: (N, 28, 28, 1) in (-1, 1), row i from z[i] alone."""
    return np.tanh(np.tile(z, (1, 8))[:, :784]).reshape(-1, 28, 28, 1)


def record(trial: int, source: str, answer: str, ms: float = 500.0) -> dict:
    return {"trial": trial, "source": source, "image_id": trial, "label": None, "answer": answer, "response_ms": ms}


# ----------------------------------------------------------------------------- the plan
def test_plan_is_half_real_half_ai_seeded_and_distinct():
    labels = load_dataset("mnist", "test").labels  # (10000,)
    trials, ai_labels = turing.plan_trials(100, 7, labels, conditional=False)
    real = [t for t in trials if t["source"] == "real"]
    ai = [t for t in trials if t["source"] == "ai"]
    assert len(real) == len(ai) == 50 and ai_labels is None
    assert len({t["image_id"] for t in real}) == 50  # distinct test images
    assert all(t["label"] == labels[t["image_id"]] for t in real)
    assert sorted(t["image_id"] for t in ai) == list(range(50)) and all(t["label"] is None for t in ai)  # rows of z
    assert turing.plan_trials(100, 7, labels, False)[0] == trials  # the seed fixes the plan
    assert turing.plan_trials(100, 8, labels, False)[0] != trials
    # Shuffled, not real-then-AI: the first 50 of 100 trials hold 25 real on average; all or none: 2 / C(100, 50).
    assert 0 < sum(t["source"] == "real" for t in trials[:50]) < 50


def test_conditional_plan_asks_g_for_the_classes_it_records():
    labels = load_dataset("mnist", "test").labels
    trials, ai_labels = turing.plan_trials(40, 3, labels, conditional=True)
    assert ai_labels.shape == (20,) and ai_labels.dtype == np.int32 and set(ai_labels) <= set(range(10))
    assert all(t["label"] == ai_labels[t["image_id"]] for t in trials if t["source"] == "ai")


def test_png_is_the_image_upscaled_8x_with_nearest_neighbours():
    image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(turing.to_png(image))))  # (224, 224) uint8
    assert decoded.shape == (224, 224)
    np.testing.assert_array_equal(decoded, np.repeat(np.repeat(image[..., 0], 8, 0), 8, 1))  # lossless: exact


# ----------------------------------------------------------------------------- the score
def test_interval_is_clopper_pearson_at_known_values():
    """Exact (Clopper-Pearson) intervals: the closed forms at k = 0 and k = n, and the tabulated 1 of 10."""
    assert turing.clopper_pearson(0, 5) == pytest.approx((0.0, 1 - 0.025 ** (1 / 5)), rel=1e-12)  # (1-p)^5 = 0.025
    assert turing.clopper_pearson(5, 5) == pytest.approx((0.025 ** (1 / 5), 1.0), rel=1e-12)
    assert turing.clopper_pearson(1, 10) == pytest.approx((0.0025, 0.4450), abs=5e-5)  # 4 decimals as tabulated
    ci = stats.binomtest(17, 50).proportion_ci(0.95, method="exact")  # a 100-trial session's 50 AI digits
    assert turing.clopper_pearson(17, 50) == pytest.approx((ci.low, ci.high), rel=1e-9)  # the same beta quantiles


def test_score_counts_fooled_ai_and_real_digits_judged_human():
    records = [record(0, "ai", "human", 900), record(1, "ai", "ai"), record(2, "real", "human"),
               record(3, "ai", "human", 300), record(4, "real", "ai"), record(5, "real", "human"),
               record(6, "ai", "ai"), record(7, "ai", "human", 300), record(8, "ai", "human", 50),
               record(9, "ai", "human", 4000), record(10, "ai", "human", 700), record(11, "real", "human")]
    s = turing.score(records)
    assert (s["n_ai"], s["fooled"], s["n_real"], s["real_human"]) == (8, 6, 4, 3)
    assert s["fool_rate"] == 0.75 and s["real_accuracy"] == 0.75
    assert (s["fool_ci_low"], s["fool_ci_high"]) == pytest.approx(turing.clopper_pearson(6, 8), rel=1e-12)
    assert s["most_fooling"] == [8, 3, 7, 10, 0]  # the quickest "human" answers first; a tie goes to the earlier trial


def test_score_of_nothing_answered_has_no_rates():
    s = turing.score([record(0, "real", "human")])
    assert s["n_ai"] == 0 and s["fool_rate"] is None and s["fool_ci_low"] is None and s["most_fooling"] == []
    assert s["real_accuracy"] == 1.0


# ----------------------------------------------------------------------------- the server
class Live:
    """A served Session of `num` trials around fake_generate, its results file in `folder`."""

    def __init__(self, folder: str, num: int = 6, seed: int = 0):
        self.session = turing.build_session(fake_generate, Config.tutorial(), num, seed, {"checkpoint": "fake"})
        self.server = turing.make_server(self.session, "127.0.0.1", 0)
        self.path = self.session.start(folder)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()  # stops in 50 ms

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body); the request carries exactly `headers` (with Host unless given) and,
        with a body, its Content-Length."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=10)
        conn.putrequest(method, path, skip_host="Host" in (headers or {}))
        for name, value in {**(headers or {}), **({"Content-Length": len(body)} if body is not None else {})}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, response.headers, data

    def post(self, body, content_type: str = "application/json") -> tuple[int, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _, data = self.request("POST", "/api/answer", raw, {"Content-Type": content_type})
        return status, json.loads(data)

    def answer(self, trial: int, answer: str = "human", ms: float = 812.5) -> tuple[int, dict]:
        return self.post({"token": self.session.token, "trial": trial, "answer": answer, "response_ms": ms})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def live(tmp_path):
    server = Live(str(tmp_path / "turing"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def one_answered(tmp_path_factory):
    """A served 6-trial session with trial 0 answered (by first_answer); every request sent to it is refused."""
    server = Live(str(tmp_path_factory.mktemp("refused") / "turing"))
    assert server.post(first_answer(server.session.token))[0] == 200
    yield server
    server.close()


def first_answer(token: str) -> dict:
    return {"token": token, "trial": 0, "answer": "ai", "response_ms": 1234.0}


def _next(token: str, **change) -> dict:
    """A well-formed answer to trial 1 (the current one), with `change` applied."""
    return {"token": token, "trial": 1, "answer": "human", "response_ms": 812.5, **change}


def _without(body: dict, key: str) -> dict:
    return {k: v for k, v in body.items() if k != key}


REFUSED = [  # (what, body from the token, HTTP status)
    ("not JSON", lambda t: b'{"token": ', 400),
    ("not UTF-8", lambda t: b"\xff\xfe{}", 400),
    ("a JSON list", lambda t: [t, 1, "human", 5], 400),
    ("a missing key", lambda t: _without(_next(t), "response_ms"), 400),
    ("an extra key", lambda t: _next(t, source="real"), 400),
    ("another session's token", lambda t: {**_next(t), "token": "A" * len(t)}, 403),
    ("a token that is not a string", lambda t: {**_next(t), "token": 12}, 403),
    ("trial past the end", lambda t: _next(t, trial=6), 400),
    ("a negative trial", lambda t: _next(t, trial=-1), 400),
    ("trial as a string", lambda t: _next(t, trial="1"), 400),
    ("trial as a float", lambda t: _next(t, trial=1.0), 400),
    ("trial as a boolean", lambda t: _next(t, trial=True), 400),
    ("answer capitalised", lambda t: _next(t, answer="Human"), 400),
    ("answer not human or ai", lambda t: _next(t, answer="robot"), 400),
    ("answer null", lambda t: _next(t, answer=None), 400),
    ("a negative response time", lambda t: _next(t, response_ms=-1), 400),
    ("a response time over an hour", lambda t: _next(t, response_ms=3_600_001), 400),
    ("a response time as a string", lambda t: _next(t, response_ms="812"), 400),
    ("a NaN response time", lambda t: json.dumps(_next(t, response_ms=float("nan"))).encode(), 400),  # json: NaN
    ("the first answer replayed", lambda t: first_answer(t), 409),
    ("trial 0 answered again, differently", lambda t: _next(t, trial=0), 409),
    ("a trial not yet shown", lambda t: _next(t, trial=2), 409),
]


@pytest.mark.parametrize("what, body, status", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_answers_leave_the_results_byte_identical(one_answered, what, body, status):
    before = open(one_answered.path, "rb").read()
    got, reply = one_answered.post(body(one_answered.session.token))
    assert got == status and set(reply) >= {"error"}, reply
    assert open(one_answered.path, "rb").read() == before
    assert len(one_answered.session.records) == 1


@pytest.mark.parametrize("method, path, body, headers, status", [
    ("POST", "/api/answer", b"{}", {"Content-Type": "text/plain"}, 415),  # what a cross-site form could send
    ("POST", "/api/answer", b"x" * 2000, {"Content-Type": "application/json"}, 413),
    ("POST", "/api/answer", None, {"Content-Type": "application/json"}, 411),  # no Content-Length
    ("POST", "/api/state", b"{}", {"Content-Type": "application/json"}, 404),
    ("GET", "/api/state", None, {"Host": "attacker.example"}, 403),  # DNS rebinding: another name, our address
    ("POST", "/api/answer", b"{}", {"Host": "attacker.example:80", "Content-Type": "application/json"}, 403),
    ("GET", "/image/6.png", None, {}, 404),  # trials 0..5
    ("GET", "/image/-1.png", None, {}, 404),
    ("GET", "/turing.py", None, {}, 404),
])
def test_refused_requests_change_nothing(one_answered, method, path, body, headers, status):
    before = open(one_answered.path, "rb").read()
    assert one_answered.request(method, path, body, headers)[0] == status
    assert open(one_answered.path, "rb").read() == before


def test_a_session_serves_page_images_and_records_answers_in_order(live):
    for path, kind in [("/", "text/html"), ("/turing.js", "text/javascript"), ("/turing.css", "text/css")]:
        status, headers, data = live.request("GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and data
        assert headers["Content-Security-Policy"] == "default-src 'self'"  # nothing from another origin
    for path in ("/", "/turing.js", "/turing.css"):
        assert b"://" not in live.request("GET", path)[2]  # no CDN: every file comes from this server
    answers = ["human", "ai", "ai", "human", "human", "ai"]
    for trial, answer in enumerate(answers):
        state = json.loads(live.request("GET", "/api/state")[2])
        assert state == {"token": live.session.token, "num": 6, "next": trial, "done": False}  # no source, no score
        status, headers, png = live.request("GET", f"/image/{trial}.png")
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(png)).size == (224, 224)
        status, reply = live.answer(trial, answer, ms=100.0 * (trial + 1))
        assert status == 200
        saved = json.load(open(live.path))  # written after every answer: a closed browser keeps what was answered
        assert [t["answer"] for t in saved["trials"]] == answers[: trial + 1]
        assert saved["complete"] is (trial == 5)
        if trial < 5:
            assert reply == {"next": trial + 1, "done": False}  # no feedback before the end
    assert saved["trials"][2]["response_ms"] == 300.0 and saved["seed"] == 0 and saved["checkpoint"] == "fake"
    assert [{k: t[k] for k in ("source", "image_id", "label")} for t in saved["trials"]] == live.session.trials
    assert saved["summary"] == turing.score(saved["trials"])
    assert reply["summary"] == {**saved["summary"], "results_file": live.path}
    assert json.loads(live.request("GET", "/api/state")[2])["summary"] == reply["summary"]


def test_two_tabs_answering_one_trial_at_once_count_once(live):
    """Both tabs show trial 0 and answer together: one answer is kept, the other gets 409."""
    start = threading.Barrier(2)
    replies = []

    def tab(answer: str) -> None:
        start.wait()
        replies.append(live.answer(0, answer))

    tabs = [threading.Thread(target=tab, args=(a,)) for a in ("human", "ai")]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join()
    assert sorted(status for status, _ in replies) == [200, 409]
    assert len(json.load(open(live.path))["trials"]) == 1 and len(live.session.records) == 1


def test_images_come_from_the_test_set_and_from_g(tmp_path):
    server = Live(str(tmp_path), num=4, seed=11)
    try:
        pngs = [server.request("GET", f"/image/{i}.png")[2] for i in range(4)]
    finally:
        server.close()
    real = load_dataset("mnist", "test").images
    fake = to_uint8(fake_generate(sample_noise(2, Config.tutorial().latent_dim, 11)))  # z of seed 11: rows 0 and 1
    for png, trial in zip(pngs, server.session.trials, strict=True):
        source = real if trial["source"] == "real" else fake
        assert png == turing.to_png(source[trial["image_id"]])


def test_a_busy_port_is_a_user_error(live):
    with pytest.raises(turing.UserError, match="choose another --port"):
        turing.make_server(live.session, "127.0.0.1", live.server.server_address[1])


# ----------------------------------------------------------------------------- where results go, the report, the flags
def test_results_go_to_the_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "20").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "checkpoints" / "20" / "weights.safetensors").write_bytes(b"")
    want = str(run / "turing")
    for checkpoint in (run, run / "checkpoints" / "20", run / "checkpoints" / "20" / "weights.safetensors"):
        assert turing.results_folder(str(checkpoint)) == want
    (tmp_path / "lone.safetensors").write_bytes(b"")
    assert turing.results_folder(str(tmp_path / "lone.safetensors")) == str(tmp_path / "turing")


def _write_session(folder, name: str, records: list[dict], num: int) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump({"format": turing.FORMAT, "num": num, "trials": records}, f)


def _cli(argv: list[str]) -> int:
    def no_generator(path):
        raise AssertionError("these flags must not load a checkpoint")

    return cli_entry(turing.turing_main)(argv, "python -m gan_jax.turing", no_generator)


def test_report_rows_and_pooled(tmp_path, capsys):
    folder = tmp_path / "turing"
    a = [record(i, "ai", "human" if i < 3 else "ai") for i in range(4)]  # 3 of 4 fooled
    a += [record(4 + i, "real", "human" if i < 3 else "ai") for i in range(4)]  # 3 of 4 real judged human
    b = [record(0, "ai", "ai"), record(1, "ai", "ai"), record(2, "real", "human")]  # unfinished: 3 of 10
    _write_session(folder, "20261201-100000.json", a, 8)
    _write_session(folder, "20261201-110000.json", b, 10)
    assert _cli(["--report", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    low, high = turing.clopper_pearson(3, 4)
    assert lines[2].split() == ["20261201-100000.json", "8/8", "4", "3", "0.750", f"[{low:.3f},", f"{high:.3f}]",
                                "0.750", "(3/4)"]
    assert lines[3].split() == ["20261201-110000.json", "3/10", "2", "0", "0.000", "[0.000,",
                                f"{1 - 0.025 ** 0.5:.3f}]", "1.000", "(1/1)"]
    low, high = turing.clopper_pearson(3, 6)  # pooled: 3 fooled of 6 AI digits, 4 of 5 real judged human
    assert lines[4].split() == ["pooled,", "2", "sessions", "11", "6", "3", "0.500", f"[{low:.3f},", f"{high:.3f}]",
                                "0.800", "(4/5)"]


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["--report", "{tmp}/missing"], "is not a folder"),
    ("empty", ["--report", "{tmp}"], "no Turing sessions in"),
    ("corrupt", ["--report", "{tmp}"], "cannot read session file"),
    ("not a session", ["--report", "{tmp}"], "is not a Turing session file"),
    (None, ["--checkpoint", "r", "--num", "3"], "--num must be an even number"),
    (None, ["--checkpoint", "r", "--num", "0"], "--num must be an even number"),
    (None, ["--checkpoint", "r", "--port", "70000"], "--port must be in 0..65535"),
    (None, ["--checkpoint", "r", "--seed", "-1"], "--seed must be a non-negative integer"),
    (None, ["--num", "10"], "one of the arguments --checkpoint --report is required"),
])
def test_bad_flags_and_files_are_one_line_errors(tmp_path, capsys, setup, argv, message):
    folder = tmp_path / "turing"
    if setup:
        folder.mkdir()
    if setup == "corrupt":
        (folder / "a.json").write_text('{"trials": [')  # a session cut short by hand
    if setup == "not a session":
        (folder / "a.json").write_text(json.dumps({"trials": [{"source": "fake", "answer": "human"}]}))
    assert _cli([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, one_thread) -> str:
    """A 20-step gan_torch run with tiny nets (what G draws does not matter here; its plumbing does)."""
    from gan_torch import train

    out = str(tmp_path_factory.mktemp("turing") / "run")
    assert train.main(["--out-dir", out, "--steps", "20", "--g-hidden", "8", "--d-hidden", "8", "--log-every", "10",
                       "--sample-every", "20", "--checkpoint-every", "20"]) == 0
    return out


@contextmanager
def serving(main: Callable[..., int], argv: list[str]) -> Iterator[turing.TuringServer]:
    """A turing CLI's `main(argv, on_start=...)` run in a thread: yields its server (the page is at
    http://127.0.0.1:<server.server_address[1]>/), then stops it and checks the exit code."""
    started: queue.Queue = queue.Queue()
    rc: list[int] = []

    def run() -> None:
        rc.append(main(argv, on_start=started.put))
        started.put(None)  # main returned before serving: do not wait for a server

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    server = started.get(timeout=120)  # loading the checkpoint and drawing the images come first
    assert server is not None, f"the turing CLI exited with {rc} before serving"
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=30)
    assert rc == [0]


@pytest.fixture(scope="module")
def browser():
    """docs/turing_screenshot.py's selenium helpers; without selenium or chromium a skip, or under
    GAN_REQUIRE_BROWSER=1 (CI) a failure. Asked for before torch_run, so a skip trains nothing."""
    missing = []
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install -e '.[test]')")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        missing.append("chromium and chromedriver (apt-get install chromium chromium-driver)")
    if missing:
        why = "the browser test needs " + " and ".join(missing)
        if os.environ.get("GAN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{why}; GAN_REQUIRE_BROWSER=1 requires it")
        pytest.skip(why)
    from docs import turing_screenshot

    return turing_screenshot


@pytest.mark.slow
def test_browser_session_of_gan_jax_cli(browser, torch_run):
    """Ten trials answered by clicks and keys (h / a) in headless Chromium, trial 5 from a second tab; the page's
    score must be the results file's, and the file must hold exactly the scripted answers."""
    tools = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from gan_jax.turing import main

    script = ["human", "ai", "human", "human", "ai", "human", "ai", "human", "ai", "human"]
    argv = ["--checkpoint", torch_run, "--num", "10", "--seed", "1", "--port", "0"]  # the torch run, read by JAX
    with serving(main, argv) as server:
        driver = tools.open_chromium(tools.chromium_paths())
        try:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
            first = driver.current_window_handle
            for trial in range(5):
                tools.wait_for_trial(driver, trial, 10)
                tools.answer(driver, script[trial], by_key=trial % 2 == 1)
            tools.wait_for_trial(driver, 5, 10)
            driver.switch_to.new_window("tab")  # a second tab of the same session picks up at trial 5
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
            tools.wait_for_trial(driver, 5, 10)
            tools.answer(driver, script[5], by_key=True)
            tools.wait_for_trial(driver, 6, 10)
            driver.switch_to.window(first)  # still showing trial 5: its answer is refused (409), then it catches up
            tools.answer(driver, "ai" if script[5] == "human" else "human", by_key=False)
            for trial in range(6, 10):
                tools.wait_for_trial(driver, trial, 10)
                tools.answer(driver, script[trial], by_key=trial % 2 == 0)
            WebDriverWait(driver, tools.WAIT_S).until(lambda d: d.find_element(By.ID, "result").is_displayed())
            page = {k: driver.find_element(By.ID, k).text for k in
                    ("fooled", "fool-rate", "fool-ci", "real-human", "real-accuracy", "results-file", "message")}
            shown = len(driver.find_elements(By.CSS_SELECTOR, "#fooled-images img"))
        finally:
            driver.quit()
        path = server.session.path
    saved = json.load(open(path))
    trials = saved["trials"]
    assert saved["complete"] is True and saved["seed"] == 1 and saved["num"] == 10
    assert [t["trial"] for t in trials] == list(range(10)) and [t["answer"] for t in trials] == script
    assert sorted(t["source"] for t in trials) == ["ai"] * 5 + ["real"] * 5
    assert all(0 < t["response_ms"] < 60_000 for t in trials)  # measured by the page, image load to answer
    # The expected score from the script and the file's sources, counted here, not by gan_common.turing.
    fooled = sum(t["source"] == "ai" and a == "human" for t, a in zip(trials, script, strict=True))
    real_human = sum(t["source"] == "real" and a == "human" for t, a in zip(trials, script, strict=True))
    s = saved["summary"]
    assert (s["fooled"], s["n_ai"], s["real_human"], s["n_real"]) == (fooled, 5, real_human, 5)
    assert (s["fool_ci_low"], s["fool_ci_high"]) == pytest.approx(turing.clopper_pearson(fooled, 5), rel=1e-12)
    assert page["fooled"] == f"{fooled} of 5" and page["fool-rate"] == f"{100 * fooled / 5:.1f}%"
    assert page["fool-ci"] == f"{100 * s['fool_ci_low']:.1f}% to {100 * s['fool_ci_high']:.1f}%"
    assert page["real-human"] == f"{real_human} of 5" and page["real-accuracy"] == f"{100 * real_human / 5:.1f}%"
    assert page["results-file"] == path and page["message"] == ""  # the refused answer was a silent 409
    assert shown == min(fooled, 5) == len(s["most_fooling"])


@pytest.mark.slow
def test_gan_torch_cli_serves_the_planned_images_and_records_an_answer(torch_run):
    from gan_torch.backend import load_generator
    from gan_torch.turing import main

    argv = ["--checkpoint", torch_run, "--num", "2", "--seed", "5", "--port", "0"]
    with serving(main, argv) as server:
        live = Live.__new__(Live)  # Live's requests, on the CLI's server
        live.server, live.session = server, server.session
        status, headers, page = live.request("GET", "/")
        assert status == 200 and b"Human or AI?" in page
        pngs = [live.request("GET", f"/image/{i}.png")[2] for i in range(2)]
        token = json.loads(live.request("GET", "/api/state")[2])["token"]
        assert live.post({"token": token, "trial": 0, "answer": "human", "response_ms": 640.0})[0] == 200
        path = server.session.path
    assert os.path.dirname(path) == os.path.join(torch_run, "turing")
    saved = json.load(open(path))
    assert saved["complete"] is False and saved["prog"] == "python -m gan_torch.turing"
    assert [(t["trial"], t["answer"], t["response_ms"]) for t in saved["trials"]] == [(0, "human", 640.0)]
    # One real trial and one AI one: each PNG is the test image, or G's image of z row 0 (seed 5), as planned.
    generate, config = load_generator(torch_run)
    sources = {"real": load_dataset("mnist", "test").images,
               "ai": to_uint8(generate(sample_noise(1, config.latent_dim, 5), None))}
    assert sorted(t["source"] for t in server.session.trials) == ["ai", "real"]
    for png, trial in zip(pngs, server.session.trials, strict=True):
        assert png == turing.to_png(sources[trial["source"]][trial["image_id"]])  # same weights, same z: exact
