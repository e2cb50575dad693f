// The Turing test page. The server holds the state: which trial is next, and the answers. This page shows
// that trial's image, sends one answer per trial ({token, trial, answer, response_ms}) and shows the score
// the server computes once every trial is answered. Another tab that answered first gets this one a 409;
// it then asks the server where the session stands and carries on from there.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;      // the last /api/state: {token, num, next, done, summary (when done)}
let shownAt = null;    // performance.now() when the current image had loaded; null while not answerable
let sending = false;   // one answer in flight at a time

function percent(x) {
  return x === null ? "n/a" : `${(100 * x).toFixed(1)}%`;
}

function setButtons(enabled) {
  $("human").disabled = !enabled;
  $("ai").disabled = !enabled;
}

async function fetchState() {
  const response = await fetch("/api/state", {cache: "no-store"});
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  return response.json();
}

function show(s) {
  state = s;
  if (s.done) return finish(s.summary);
  $("trial").hidden = false;
  $("progress").textContent = `Digit ${s.next + 1} of ${s.num}`;
  shownAt = null;
  setButtons(false);
  const img = $("digit");
  const ready = () => { shownAt = performance.now(); setButtons(true); };
  const src = `/image/${s.next}.png`;
  if (img.getAttribute("src") === src && img.complete) return ready();  // same trial again: no new load event
  img.onload = ready;
  img.src = src;
}

function finish(summary) {
  $("trial").hidden = true;
  $("result").hidden = false;
  $("fooled").textContent = `${summary.fooled} of ${summary.n_ai}`;
  $("fool-rate").textContent = percent(summary.fool_rate);
  $("fool-ci").textContent = summary.n_ai ? `${percent(summary.fool_ci_low)} to ${percent(summary.fool_ci_high)}`
                                          : "n/a";
  $("real-human").textContent = `${summary.real_human} of ${summary.n_real}`;
  $("real-accuracy").textContent = percent(summary.real_accuracy);
  $("results-file").textContent = summary.results_file;
  const box = $("fooled-images");
  box.replaceChildren();
  for (const trial of summary.most_fooling) {
    const img = document.createElement("img");
    img.src = `/image/${trial}.png`;
    img.alt = `AI digit of trial ${trial + 1}`;
    box.append(img);
  }
  if (!summary.most_fooling.length) box.textContent = "None: no AI digit fooled you.";
}

async function answer(value) {
  if (shownAt === null || sending) return;
  const responseMs = performance.now() - shownAt;
  sending = true;
  setButtons(false);
  $("message").textContent = "";
  try {
    const response = await fetch("/api/answer", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token: state.token, trial: state.next, answer: value, response_ms: responseMs}),
    });
    const reply = await response.json();
    if (response.ok) {
      show({...state, next: reply.next, done: reply.done, summary: reply.summary});
    } else {
      if (response.status !== 409) $("message").textContent = reply.error;  // 409: another tab answered it
      show(await fetchState());
    }
  } catch (error) {
    $("message").textContent = `Could not reach the server (${error.message}); is it still running?`;
    setButtons(true);
  } finally {
    sending = false;
  }
}

$("human").addEventListener("click", () => answer("human"));
$("ai").addEventListener("click", () => answer("ai"));
document.addEventListener("keydown", (event) => {
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;  // a held key answers once
  const key = event.key.toLowerCase();
  if (key === "h") answer("human");
  else if (key === "a") answer("ai");
});

fetchState().then(show).catch((error) => {
  $("message").textContent = `Could not reach the server (${error.message}); is it still running?`;
});
