"""The human Turing test, the framework-free whole of it: a local web page shows one digit at a time,
half real test images and half generated, in a seeded random order, and a person answers "human" or
"AI". The score is the fool rate: the share of AI digits judged human (0.5 would be a generator the
person cannot tell from real digits; a person who spots every AI digit scores 0).

    plan_trials   which real images and which rows of z, in which order (from the seed)
    score         fool rate with its Clopper-Pearson 95% interval, accuracy on real digits
    Session       the trials' PNGs, the answers (validated, first answer per trial wins), the results file
    make_server   http.server's ThreadingHTTPServer around a Session, serving gan_common/assets/turing/
    report        every session of a run, and all of them pooled, as one table
    turing_main   `python -m gan_{jax,torch}.turing`: the backend passes its `load_generator`

The page learns an image's source only at the end: image URLs are trial indices, and answers get
back only the next trial's index. The results file (RUN/turing/<timestamp>.json) is rewritten
atomically after every answer, so a closed browser keeps what was answered.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np
from PIL import Image

from gan_common.c2st import CONFIDENCE, clopper_pearson
from gan_common.cli import HelpFormatter, LoadGenerator, Parser, write_json
from gan_common.config import NUM_CLASSES, Config
from gan_common.datasets import load_dataset
from gan_common.errors import UserError
from gan_common.outputs import CONFIG_FILE, to_uint8
from gan_common.sampling import sample_noise

SOURCES = ("real", "ai")  # what a trial shows: a test-set image, or a generated one
ANSWERS = ("human", "ai")  # what the person says
SCALE = 8  # nearest-neighbour upscaling: a 28 px digit is drawn at 224 px, its pixels kept sharp
SESSIONS_DIR = "turing"  # RUN/turing/<timestamp>.json
FORMAT = "gan-turing-session-1"  # the results file's layout, for a reader years later
MAX_BODY = 1024  # bytes: an answer is about 100; anything longer is not one
MAX_RESPONSE_MS = 3_600_000.0  # an hour: a longer "response time" is a broken clock, not a judgement
NUM_SHOWN_FOOLING = 5  # the AI digits shown at the end
LOOPBACK = ("127.0.0.1", "localhost")
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/turing.js": ("turing.js", "text/javascript"),
          "/turing.css": ("turing.css", "text/css")}
IMAGE_URL = re.compile(r"/image/(\d{1,6})\.png")  # /image/<trial>.png: the trial's index, never its source


# ----------------------------------------------------------------------------- the plan and the score
def plan_trials(num: int, seed: int, real_labels: np.ndarray,
                conditional: bool) -> tuple[list[dict], np.ndarray | None]:
    """`num` trials in a random order, num/2 of each source, all drawn from `seed`:
    real: image_id is a row of the test split (label: its class), distinct rows;
    ai: image_id is a row of z = sample_noise(num/2, latent_dim, seed) (label: the class a conditional G is
    asked for, uniform, else None). Also returns those classes, (num/2,) int32, or None if unconditional."""
    rng = np.random.default_rng([seed, 1])  # not default_rng(seed): that stream is z's
    half = num // 2
    real_ids = rng.choice(len(real_labels), half, replace=False)
    ai_labels = rng.integers(0, NUM_CLASSES, half).astype(np.int32) if conditional else None
    trials = []
    for item in rng.permutation(num):  # items 0..half-1 are real, half..num-1 generated
        if item < half:
            row = int(real_ids[item])
            trials.append({"source": "real", "image_id": row, "label": int(real_labels[row])})
        else:
            row = int(item - half)
            label = None if ai_labels is None else int(ai_labels[row])
            trials.append({"source": "ai", "image_id": row, "label": label})
    return trials, ai_labels


def score(records: Sequence[dict]) -> dict:
    """The answered trials' score. fool_rate: AI digits judged human / AI digits answered, with its exact
    (Clopper-Pearson) 95% interval; real_accuracy: real digits judged human / real digits answered; rates
    are None where nothing of that source was answered. most_fooling: the fooled trials with the quickest
    "human" answers first (a quick answer is a confident one), at most five."""
    ai = [r for r in records if r["source"] == "ai"]
    real = [r for r in records if r["source"] == "real"]
    fooled = [r for r in ai if r["answer"] == "human"]
    real_human = sum(r["answer"] == "human" for r in real)
    low, high = clopper_pearson(len(fooled), len(ai)) if ai else (None, None)
    quickest = sorted(fooled, key=lambda r: (r["response_ms"], r["trial"]))[:NUM_SHOWN_FOOLING]
    return {"n_ai": len(ai), "fooled": len(fooled), "fool_rate": len(fooled) / len(ai) if ai else None,
            "fool_ci_low": low, "fool_ci_high": high, "confidence": CONFIDENCE,
            "n_real": len(real), "real_human": real_human, "real_accuracy": real_human / len(real) if real else None,
            "most_fooling": [r["trial"] for r in quickest]}


def to_png(image: np.ndarray, scale: int = SCALE) -> bytes:
    """(H, W, C) uint8 -> PNG bytes, `scale`x larger with nearest neighbours; real and generated images go
    through this same encoder, so nothing in the file tells them apart."""
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# ----------------------------------------------------------------------------- answers and the session
class Rejected(Exception):
    """A request the server refuses: an HTTP status (4xx) and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_answer(raw: bytes, token: str, num: int) -> tuple[int, str, float]:
    """(trial, answer, response_ms) of a POST /api/answer body, or Rejected: the body must be exactly
    {"token": this session's, "trial": 0..num-1, "answer": "human" | "ai", "response_ms": 0..an hour}."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejected(400, "the body is not JSON") from None
    keys = {"token", "trial", "answer", "response_ms"}
    if not isinstance(body, dict) or set(body) != keys:
        raise Rejected(400, f"expected a JSON object with exactly the keys {sorted(keys)}")
    if not isinstance(body["token"], str) or not secrets.compare_digest(body["token"], token):
        raise Rejected(403, "wrong session token: this page belongs to another session; reload it")
    trial, answer, ms = body["trial"], body["answer"], body["response_ms"]
    if type(trial) is not int or not 0 <= trial < num:  # type(): True is an int too
        raise Rejected(400, f"trial must be an integer in 0..{num - 1}, got {trial!r}")
    if answer not in ANSWERS:
        raise Rejected(400, f"answer must be one of {list(ANSWERS)}, got {answer!r}")
    if type(ms) not in (int, float) or not math.isfinite(ms) or not 0 <= ms <= MAX_RESPONSE_MS:
        raise Rejected(400, f"response_ms must be a number of milliseconds in 0..{MAX_RESPONSE_MS:.0f}, got {ms!r}")
    return trial, answer, float(ms)


class Session:
    """One person's pass through the trials. Thread-safe: the server answers requests in threads. Trials are
    answered in order and the first answer to a trial is the one kept, so two tabs cannot count twice."""

    def __init__(self, trials: list[dict], pngs: list[bytes], meta: dict,
                 on_complete: Callable[[Session], None] | None = None):
        self.trials = trials  # [{"source", "image_id", "label"}] in the order shown
        self.pngs = pngs  # the trials' images, encoded once
        self.meta = meta  # checkpoint, seed, num, ... copied into the results file
        self.token = secrets.token_urlsafe(16)  # a tab of an earlier server on this port is refused (403)
        self.path: str | None = None  # the results file, once start() has made it
        self.records: list[dict] = []  # records[i] is trial i's answer
        self.on_complete = on_complete
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return len(self.records) == len(self.trials)

    def start(self, folder: str) -> str:
        """Make the results file, folder/<timestamp>.json (a new name: an existing session is never overwritten)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            os.makedirs(folder, exist_ok=True)
            for n in range(1, 100):
                path = os.path.join(folder, f"{stamp}.json" if n == 1 else f"{stamp}-{n}.json")
                try:
                    open(path, "x").close()  # claims the name; save() then fills it atomically
                except FileExistsError:
                    continue
                self.path = path
                self.save()
                return path
        except OSError as e:
            raise UserError(f"cannot write the results in {folder!r}: {e.strerror or e}") from None
        raise UserError(f"{folder} already holds 99 sessions started at {stamp}; try again in a second")

    def results(self) -> dict:
        """The results file's content: who and what, every answered trial, and the score so far."""
        return {"format": FORMAT, **self.meta, "complete": self.done, "trials": self.records,
                "summary": score(self.records)}

    def save(self) -> None:
        write_json(self.path, self.results(), "results file")  # tmp + os.replace: never half a file

    def state(self) -> dict:
        """What the page needs: the token, the count, the next trial; the score only once all are answered."""
        with self._lock:
            out = {"token": self.token, "num": len(self.trials), "next": len(self.records), "done": self.done}
            if self.done:
                out["summary"] = {**score(self.records), "results_file": self.path}
            return out

    def submit(self, raw: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON reply) for a POST /api/answer body; anything but 200 leaves the results as they were."""
        try:
            trial, answer, ms = parse_answer(raw, self.token, len(self.trials))
        except Rejected as e:
            return e.status, {"error": str(e)}
        with self._lock:
            current = len(self.records)
            if trial != current:
                why = "was already answered" if trial < current else "has not been shown yet"
                return 409, {"error": f"trial {trial} {why}; the current one is {current}", "next": current}
            self.records.append({"trial": trial, **self.trials[trial], "answer": answer, "response_ms": ms,
                                 "answered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            if self.done:
                self.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            try:
                self.save()
            except UserError as e:  # the disk refused: forget the answer, so the page can send it again
                self.records.pop()
                self.meta.pop("finished", None)
                return 500, {"error": str(e)}
            finished = self.done
            reply = {"next": len(self.records), "done": finished}
            if finished:
                reply["summary"] = {**score(self.records), "results_file": self.path}
        if finished and self.on_complete:
            self.on_complete(self)  # outside the lock: it may print, slowly
        return 200, reply


def build_session(generate: Callable[..., np.ndarray], config: Config, num: int, seed: int, meta: dict,
                  on_complete: Callable[[Session], None] | None = None) -> Session:
    """The trials of `plan_trials`, their images (real ones from the run's dataset's test split, generated
    ones from `generate(z, labels)`) as PNGs, in a Session not yet started (no results file yet)."""
    data = load_dataset(config.dataset, "test", config.data_source, config.data_dir,
                        image_size=config.image_size, channels=config.channels)  # folder data: the run's shape
    if num > 2 * len(data.images):
        raise UserError(f"--num {num} needs {num // 2} real images; {config.dataset}'s test split has "
                        f"{len(data.images)}")
    trials, labels = plan_trials(num, seed, data.labels, config.conditional)
    fake = to_uint8(generate(sample_noise(num // 2, config.latent_dim, seed), labels))  # (num/2, H, W, C)
    if fake.shape[1:] != data.images.shape[1:]:
        raise UserError(f"the generator draws {fake.shape[1:]} images but {config.dataset}'s are "
                        f"{data.images.shape[1:]}")
    pngs = [to_png((data.images if t["source"] == "real" else fake)[t["image_id"]]) for t in trials]
    meta = {**meta, "seed": seed, "num": num, "dataset": config.dataset, "conditional": config.conditional,
            "latent_dim": config.latent_dim, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return Session(trials, pngs, meta, on_complete)


def results_folder(checkpoint: str) -> str:
    """RUN/turing for a run folder, a checkpoint folder in it or its weight file (the nearest folder at or
    above holding config.json); a lone weight file's own folder/turing otherwise."""
    start = os.path.dirname(os.path.abspath(checkpoint)) if os.path.isfile(checkpoint) else os.path.abspath(checkpoint)
    folder = start
    for _ in range(4):  # RUN/checkpoints/STEP/weights.safetensors is three levels below RUN
        if os.path.isfile(os.path.join(folder, CONFIG_FILE)):
            return os.path.join(folder, SESSIONS_DIR)
        folder = os.path.dirname(folder)
    return os.path.join(start, SESSIONS_DIR)


# ----------------------------------------------------------------------------- the server
class Handler(BaseHTTPRequestHandler):
    """GET the page, its script and style, /api/state and /image/<trial>.png; POST /api/answer."""

    server: TuringServer
    timeout = 10  # seconds a connection may sit idle (a body shorter than its Content-Length) before it is dropped

    def log_message(self, format: str, *args) -> None:
        """Quiet: the terminal shows the session, not a line per request."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # a reload asks the server, which knows the state
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'")  # our files only: no CDN, no inline code
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _host_ok(self) -> bool:
        """Bound to loopback, answer only requests addressed to it: a web page that rebinds its own name to
        127.0.0.1 (DNS rebinding) sends its own Host and gets a 403."""
        if not self.server.loopback:
            return True
        host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname
        if host in LOOPBACK:
            return True
        self._json(403, {"error": f"this server answers only requests addressed to {' or '.join(LOOPBACK)}"})
        return False

    def do_GET(self) -> None:  # http.server's names: do_<METHOD>
        if not self._host_ok():
            return
        path = urllib.parse.urlsplit(self.path).path
        session = self.server.session
        image = IMAGE_URL.fullmatch(path)
        if path in ASSETS:
            name, content_type = ASSETS[path]
            self._send(200, (resources.files("gan_common") / "assets" / "turing" / name).read_bytes(), content_type)
        elif path == "/api/state":
            self._json(200, session.state())
        elif image and int(image[1]) < len(session.pngs):
            self._send(200, session.pngs[int(image[1])], "image/png")
        else:
            self._json(404, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        if urllib.parse.urlsplit(self.path).path != "/api/answer":
            return self._json(404, {"error": "POST goes to /api/answer"})
        # application/json only: a form on another site cannot send it without the browser asking first (CORS)
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            return self._json(415, {"error": "Content-Type must be application/json"})
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._json(411, {"error": "a Content-Length is required"})
        if int(length) > MAX_BODY:
            return self._json(413, {"error": f"an answer is at most {MAX_BODY} bytes"})
        status, reply = self.server.session.submit(self.rfile.read(int(length)))
        self._json(status, reply)


class TuringServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the Session it serves. The standard library's server: no dependency to
    install, and enough for one person's browser on this machine (not a public web server)."""

    daemon_threads = True  # Ctrl-C does not wait for a browser's open connection

    def __init__(self, session: Session, host: str, port: int):
        self.session = session
        self.loopback = host in LOOPBACK
        super().__init__((host, port), Handler)


def make_server(session: Session, host: str, port: int) -> TuringServer:
    """Bind (port 0: any free port; `server.server_address` says which); a busy port is a UserError."""
    try:
        return TuringServer(session, host, port)
    except OSError as e:  # in use, not ours, or a name that does not resolve
        raise UserError(f"cannot serve on {host}:{port} ({e.strerror or e}); choose another --port "
                        "(0: any free one) or --host") from None


# ----------------------------------------------------------------------------- the report
def load_session(path: str) -> dict:
    """A results file, checked enough to score: a JSON object whose trials each have a source and an answer."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read session file {path!r} ({getattr(e, 'strerror', None) or e}); "
                        "move it out of the turing folder or delete it") from None
    trials = data.get("trials") if isinstance(data, dict) else None
    ok = isinstance(trials, list) and all(
        isinstance(t, dict) and t.get("source") in SOURCES and t.get("answer") in ANSWERS
        and isinstance(t.get("response_ms"), (int, float)) and isinstance(t.get("trial"), int) for t in trials)
    if not ok:
        raise UserError(f"{path!r} is not a Turing session file (expected an object with a list of trials, each "
                        f"with source {'/'.join(SOURCES)} and answer {'/'.join(ANSWERS)})")
    return data


def _rate(k: int, n: int, interval: bool) -> str:
    if n == 0:
        return "-"
    if not interval:
        return f"{k / n:.3f} ({k}/{n})"
    low, high = clopper_pearson(k, n)
    return f"{k / n:.3f} [{low:.3f}, {high:.3f}]"


def report(run: str) -> str:
    """One row per session of RUN/turing (answered trials only; an unfinished session says so) and the
    pooled row: all sessions' answers counted together."""
    if not os.path.isdir(run):
        raise UserError(f"--report {run!r} is not a folder; give a run folder (its sessions are in RUN/turing)")
    folder = os.path.join(run, SESSIONS_DIR)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
    if not names:
        raise UserError(f"no Turing sessions in {folder}; run one with --checkpoint {run}")
    head = f"{'session':<26} {'answered':>9} {'n_ai':>5} {'fooled':>6}  {'fool rate [95% CI]':<22}  real accuracy"
    lines = [head, "-" * len(head)]
    pooled = []
    for name in names:
        data = load_session(os.path.join(folder, name))
        s = score(data["trials"])
        answered = f"{len(data['trials'])}/{data.get('num', '?')}"
        lines.append(f"{name:<26} {answered:>9} {s['n_ai']:>5} {s['fooled']:>6}  "
                     f"{_rate(s['fooled'], s['n_ai'], True):<22}  {_rate(s['real_human'], s['n_real'], False)}")
        pooled += data["trials"]
    s = score(pooled)
    pooled_name = f"pooled, {len(names)} session{'s' if len(names) > 1 else ''}"
    lines.append(f"{pooled_name:<26} {len(pooled):>9} {s['n_ai']:>5} {s['fooled']:>6}  "
                 f"{_rate(s['fooled'], s['n_ai'], True):<22}  {_rate(s['real_human'], s['n_real'], False)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the CLI of both backends
def parse_turing_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    p = Parser(prog=prog, description="A human Turing test: a local web page shows real and generated images one "
               "at a time, 50/50 in a random order, and you answer human or AI (click, or the keys h and a). "
               "The score, at the end, is the fool rate: the share of AI images you judged human.",
               formatter_class=HelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="RUN", help="serve a session of this run folder, checkpoint folder or "
                      "weights.safetensors; the results go to RUN/turing/<timestamp>.json")
    what.add_argument("--report", metavar="RUN", help="print the fool rate of every session of RUN, and pooled")
    p.add_argument("--num", type=int, default=100, help="trials, even: half real test images, half generated")
    p.add_argument("--seed", type=int, help="seed of the trial order, the real images and z (default: a random "
                   "one, recorded in the results)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on; another than 127.0.0.1 lets other "
                   "machines reach the page")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (0: any free one)")
    args = p.parse_args(argv)
    if args.num < 2 or args.num % 2:
        raise UserError(f"--num must be an even number of at least 2 (half real, half AI), got {args.num}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    return args


def _announce(session: Session) -> None:
    s = score(session.records)
    print(f"done: fooled by {s['fooled']} of {s['n_ai']} AI images, fool rate {s['fool_rate']:.3f} "
          f"[{s['fool_ci_low']:.3f}, {s['fool_ci_high']:.3f}]; real images judged human {s['real_human']} of "
          f"{s['n_real']}; results in {session.path} (Ctrl-C stops the server)", flush=True)


def turing_main(argv: Sequence[str] | None, prog: str, load_generator: LoadGenerator,
                on_start: Callable[[TuringServer], None] | None = None) -> int:
    """`python -m gan_{jax,torch}.turing`. Serves until Ctrl-C, or until another thread calls
    `server.shutdown()`: `on_start(server)` is called once the port is bound (tests learn the port from it)."""
    args = parse_turing_args(argv, prog)
    if args.report:
        print(report(args.report))
        return 0
    generate, config = load_generator(args.checkpoint)
    seed = secrets.randbelow(2**32) if args.seed is None else args.seed
    meta = {"checkpoint": os.path.abspath(args.checkpoint), "prog": prog}
    session = build_session(generate, config, args.num, seed, meta, _announce)
    server = make_server(session, args.host, args.port)  # a busy port fails here, before a results file exists
    try:
        path = session.start(results_folder(args.checkpoint))
        host, port = server.server_address[:2]
        print(f"Turing test of {args.checkpoint}: {args.num} images, half real, seed {seed}; results in {path}")
        if host not in LOOPBACK:
            print(f"serving on {host}: any machine that reaches this one can open the page")
        print(f"open http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/ in a browser (Ctrl-C stops)",
              flush=True)
        if on_start:
            on_start(server)  # bound already: requests made now wait in the socket's queue
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"stopped after {len(session.records)} of {args.num} answers; results in {session.path}")
    finally:
        server.server_close()
    return 0
