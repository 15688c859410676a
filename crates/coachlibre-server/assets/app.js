// CoachLibre web app: the few live parts of the pages, in plain JavaScript.
// - the chat streams the agent's answer from the API (Server-Sent Events read with fetch);
// - sections marked data-refresh reload themselves while something is in progress;
// - buttons with data-confirm ask first; links with data-back go back.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- chat ----------------------------------------------------------------------------------

function setupChat(form) {
  const id = form.dataset.conversation;
  const input = form.querySelector("textarea");
  const send = form.querySelector("button");
  const list = document.getElementById("chat");

  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    document.getElementById("chat-empty")?.remove();
    const mine = el("li", "bubble user");
    mine.append(el("div", "text", content));
    list.append(mine);
    const answer = el("li", "bubble assistant streaming");
    answer.setAttribute("aria-busy", "true");
    const tools = el("p", "tools");
    const text = el("div", "text");
    answer.append(tools, text);
    list.append(answer);
    input.value = "";
    send.disabled = true;
    answer.scrollIntoView({ block: "end" });
    try {
      const res = await fetch(`/api/v1/conversations/${id}/messages`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), Accept: "text/event-stream" },
        body: JSON.stringify({ content }),
      });
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        throw new Error(body?.error?.message ?? `the server answered ${res.status}`);
      }
      await readEvents(res, (name, data) => onEvent(name, data, { answer, tools, text }));
    } catch (e) {
      answer.append(el("p", "note", `Not sent: ${e.message}.`));
    } finally {
      answer.classList.remove("streaming");
      answer.removeAttribute("aria-busy");
      send.disabled = false;
      input.focus();
    }
  });
}

async function readEvents(res, handle) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) {
        try { handle(name, JSON.parse(data.join("\n"))); } catch (_) { /* keep-alive or partial */ }
      }
    }
  }
}

function onEvent(name, data, ui) {
  switch (name) {
    case "waiting": {
      // Said once, removed when the answer starts.
      const note = el("p", "note waiting", data.message);
      note.setAttribute("role", "status");
      ui.answer.append(note);
      break;
    }
    case "token":
      ui.answer.querySelector("p.waiting")?.remove();
      ui.text.textContent += data.text;
      break;
    case "tool_call":
      ui.tools.append(el("span", "", `using ${data.name}…`));
      break;
    case "tool_result": {
      const spans = [...ui.tools.children].filter((s) => s.textContent === `using ${data.name}…`);
      if (spans.length) spans[0].textContent = data.ok ? `used ${data.name}` : `${data.name} failed`;
      break;
    }
    case "citation": {
      let cites = ui.answer.querySelector("ul.citations");
      if (!cites) {
        cites = el("ul", "citations");
        cites.setAttribute("aria-label", "Sources");
        ui.answer.append(cites);
      }
      const li = el("li");
      const a = el("a", "", `[${data.index}] ${data.title}${data.heading ? " — " + data.heading : ""}`);
      a.href = `/app/passages/${data.chunk_id}`;
      li.append(a);
      cites.append(li);
      break;
    }
    case "approval_required":
      ui.answer.append(el("p", "note", "Waiting for your coach's approval."));
      break;
    case "error":
      ui.answer.append(el("p", "note", data.message || "The answer could not be finished."));
      break;
    case "done":
      ui.answer.dataset.done = data.finish || "stop";
      break;
  }
  ui.answer.scrollIntoView({ block: "end" });
}

// ---- sections that refresh while work is in progress ---------------------------------------

function watch(section) {
  const url = section.dataset.refresh;
  const tick = async () => {
    if (!section.hasAttribute("data-pending")) return;
    try {
      const res = await fetch(url, { headers: { Accept: "text/html" } });
      if (res.ok) {
        const tpl = document.createElement("template");
        tpl.innerHTML = (await res.text()).trim();
        const fresh = tpl.content.firstElementChild;
        if (fresh) {
          section.replaceWith(fresh);
          watch(fresh);
          return;
        }
      }
    } catch (_) { /* try again */ }
    setTimeout(tick, 1500);
  };
  if (section.hasAttribute("data-pending")) setTimeout(tick, 1000);
}

// ---- small helpers -------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const chat = document.getElementById("chat-form");
  if (chat) setupChat(chat);
  document.querySelectorAll("[data-refresh]").forEach(watch);
  document.querySelectorAll("[data-confirm]").forEach((b) =>
    b.addEventListener("click", (ev) => { if (!confirm(b.dataset.confirm)) ev.preventDefault(); }));
  document.querySelectorAll("[data-back]").forEach((a) =>
    a.addEventListener("click", (ev) => { if (history.length > 1) { ev.preventDefault(); history.back(); } }));
});
