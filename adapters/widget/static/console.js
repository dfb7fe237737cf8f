/* The agent console. Every text is set with textContent, never parsed as HTML. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var state = { status: "active", current: null, pollTimer: null, refreshTimer: null, ws: null, pollS: 10,
    me: "", rows: [], agents: [], clockOffsetMs: 0, q: "", filters: { queue: "", channel: "", agent: "", language: "" },
    presence: {}, canned: {}, presenceTtlS: 30, viewTimer: null, lastTyping: 0, language: "" };
  var TYPING_SHOWN_MS = 6000;  // a typing mark not repeated within this is dropped (flows: presence.TYPING_TTL_S)
  // how the flows' notices read in a transcript ("" shows the text alone: "resolved by Ana")
  var NOTICE_LABELS = { state: "", sla_warning: "SLA warning", sla_breach: "SLA breach", page: "On call paged",
    delivery: "Not delivered", dispute_step: "", survey_result: "" };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function api(method, path, body) {
    var options = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401 && path !== "/agent/login") { showLogin(); }
        if (!response.ok) { var err = new Error(data.error || ("HTTP " + response.status)); err.status = response.status; throw err; }
        return data;
      });
    });
  }

  // -- login -------------------------------------------------------------------------------
  function showLogin(passwordLogin) {
    $("app").hidden = true;
    $("login").hidden = false;
    if (passwordLogin === false) { $("password-fields").hidden = true; }
    stopLive();
  }

  function login(body, fromLink) {
    return api("POST", "/agent/login", body).then(start).catch(function (err) {
      if (fromLink) {
        showLogin();
        err.message = "This login link is wrong or out of date (" + err.message + "). " +
          "Log in below, or ask for a new link (bridge run prints one).";
      }
      $("login-error").textContent = err.message;
    });
  }

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var token = $("login-token").value;
    login(token ? { token: token, name: $("login-as").value } : { name: $("login-name").value, password: $("login-password").value });
  });
  $("logout").addEventListener("click", function () { api("POST", "/agent/logout", {}).then(function () { showLogin(); }); });

  // -- list: the work queue ---------------------------------------------------------------
  function nowMs() { return Date.now() + state.clockOffsetMs; }

  /** "45s", "12m", "3h", "2d": a span, for waiting and due times. */
  function span(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h" + (Math.floor(s / 60) % 60 ? " " + (Math.floor(s / 60) % 60) + "m" : ""); }
    return Math.floor(s / 86400) + "d";
  }

  function waitingText(c) { return c.waiting_since_ms ? "waiting " + span(nowMs() - c.waiting_since_ms) : ""; }

  function dueText(c) {
    if (!c.due_ms) { return ""; }
    var what = c.due_kind === "first_response" ? "reply" : "resolve";
    var left = c.due_ms - nowMs();
    return left >= 0 ? what + " due in " + span(left) : what + " overdue " + span(-left);
  }

  /** A person's name, else something shorter than a raw address to tell them apart. */
  function who(c) {
    if (c.customer) { return c.customer; }
    if (c.channel === "widget" && /^v_[0-9a-f]{6}/.test(c.address)) { return "Visitor " + c.address.slice(2, 8); }
    return c.address;
  }

  function tag(text, cls) { return el("span", "tag" + (cls ? " " + cls : ""), text); }

  function agentOf(login) {
    for (var i = 0; i < state.agents.length; i++) { if (state.agents[i].login === login) { return state.agents[i]; } }
    return { login: login, name: login, initials: (login || "?").slice(0, 2).toUpperCase(), online: false };
  }

  function listQuery() {
    var parts = ["status=" + encodeURIComponent(state.status)];
    Object.keys(state.filters).forEach(function (name) {
      if (state.filters[name]) { parts.push(name + "=" + encodeURIComponent(state.filters[name])); }
    });
    if (state.q) { parts.push("q=" + encodeURIComponent(state.q)); }
    return parts.join("&");
  }

  function refreshList() {
    var asked = listQuery();
    return api("GET", "/agent/api/conversations?" + asked).then(function (data) {
      if (asked !== listQuery()) { return; }  // the filters changed meanwhile: a newer answer comes
      state.rows = data.conversations || [];
      state.note = data.note || "";  // a search that could not be whole says so
      state.agents = data.agents || [];
      if (data.now_ms) { state.clockOffsetMs = data.now_ms - Date.now(); }
      fillFilters(data.facets || {});
      fillAssign();
      renderList();
    }).catch(function () { /* shown by the live dot; retried */ });
  }

  /** The list, keyed by conversation: a row's element stays while its content is redrawn,
   *  and stays in the page unless the order changed, so a click that started on it is not
   *  lost to a refresh (an element taken out between the press and the release gets no
   *  click: re-appending every row on each refresh lost clicks now and then). */
  function renderList() {
    var list = $("list");
    var kept = {};
    Array.prototype.forEach.call(list.querySelectorAll("li[data-id]"), function (li) { kept[li.getAttribute("data-id")] = li; });
    Array.prototype.forEach.call(list.querySelectorAll("li.empty, li.note"), function (li) { li.remove(); });
    var next = list.firstChild;  // where the next row belongs
    if (state.note) { list.insertBefore(el("li", "note", state.note), next); }
    var wanted = {};
    state.rows.forEach(function (c) {
      wanted[c.id] = true;
      var li = kept[c.id];
      if (!li) {
        li = el("li");
        li.setAttribute("data-id", c.id);
        li.addEventListener("click", function () { open(li.getAttribute("data-id")); });
      }
      fillRow(li, c);
      if (li === next) {
        next = next.nextSibling;
      } else {
        list.insertBefore(li, next);  // new, or the order changed: moved to its place
      }
    });
    Object.keys(kept).forEach(function (id) { if (!wanted[id]) { kept[id].remove(); } });
    if (!state.rows.length) { list.appendChild(el("li", "empty", state.q ? "No conversation matches." : "Nothing here.")); }
  }

  /** A row's content, drawn again only when it changed (the times change in place): an
   *  element taken out of the page between a press and its release gets no click. */
  function fillRow(li, c) {
    li.setAttribute("data-urgency", c.urgency);
    li.className = c.id === state.current ? "selected" : "";
    var fresh = document.createElement("li");
    drawRow(fresh, c);
    if (fresh.innerHTML !== li.drawn) {
      li.drawn = fresh.innerHTML;
      li.replaceChildren.apply(li, Array.prototype.slice.call(fresh.childNodes));
    }
    fillTimes(li, c);
  }

  function drawRow(li, c) {
    var row1 = el("div", "row1");
    row1.appendChild(el("span", "who", who(c)));
    var unread = c.id === state.current ? 0 : c.unread;
    if (unread) { row1.appendChild(el("span", "unread", unread >= 30 ? "30+" : unread)); }
    if (c.urgency === "urgent") { row1.appendChild(tag("urgent", "urgent")); }
    row1.appendChild(tag(c.channel));
    if (c.language) { row1.appendChild(tag(c.language, "lang")); }
    row1.appendChild(tag(c.status, c.status));
    if (c.assignee) {
      var a = agentOf(c.assignee);
      var chip = el("span", "initials assignee", a.initials);
      chip.title = "assigned to " + a.name;
      row1.appendChild(chip);
    }
    li.appendChild(row1);
    li.appendChild(el("div", "preview", c.snippet || c.preview || ""));
    var row3 = el("div", "times");
    row3.appendChild(el("span", "waiting"));
    row3.appendChild(el("span", "due"));
    row3.appendChild(viewersChip(c.id));
    if (c.queue) { row3.appendChild(el("span", "queue", c.queue)); }
    li.appendChild(row3);
  }

  /** Waiting and due as of now: redrawn in place every few seconds. */
  function fillTimes(li, c) {
    li.querySelector(".waiting").textContent = waitingText(c);
    var due = li.querySelector(".due");
    due.textContent = dueText(c);
    due.classList.toggle("overdue", !!c.due_ms && c.due_ms < nowMs());
  }

  function refreshTimes() {
    state.rows.forEach(function (c) {
      var li = $("list").querySelector('li[data-id="' + CSS.escape(c.id) + '"]');
      if (li) { fillTimes(li, c); }
    });
  }

  function fillSelect(select, first, values, labels) {
    var current = select.value;
    select.textContent = "";
    first.forEach(function (pair) { var o = el("option", "", pair[1]); o.value = pair[0]; select.appendChild(o); });
    values.forEach(function (v) { var o = el("option", "", labels ? labels(v) : v); o.value = v; select.appendChild(o); });
    select.value = current;
    if (select.value !== current) { select.value = ""; }
  }

  function fillFilters(facets) {
    fillSelect($("f-queue"), [["", "Any queue"]], facets.queue || []);
    fillSelect($("f-channel"), [["", "Any channel"]], facets.channel || []);
    fillSelect($("f-language"), [["", "Any language"]], facets.language || []);
    var agents = facets.agent || [];
    state.agents.forEach(function (a) { if (agents.indexOf(a.login) < 0) { agents.push(a.login); } });
    fillSelect($("f-agent"), [["", "Any agent"], ["-", "Unassigned"]], agents.sort(),
      function (login) { return agentOf(login).name + (agentOf(login).name !== login ? " (" + login + ")" : ""); });
  }

  ["queue", "channel", "agent", "language"].forEach(function (name) {
    $("f-" + name).addEventListener("change", function () {
      state.filters[name] = $("f-" + name).value;
      refreshList();
    });
  });

  var searchTimer = null;
  $("search").addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () { state.q = $("search").value.trim(); refreshList(); }, 250);
  });
  $("search").addEventListener("keydown", function (event) {
    if (event.key === "Escape") { $("search").value = ""; state.q = ""; refreshList(); $("search").blur(); }
    if (event.key === "Enter") { clearTimeout(searchTimer); state.q = $("search").value.trim(); refreshList(); }
  });

  // -- one conversation --------------------------------------------------------------------
  function open(id) {
    if (state.current !== id) { state.language = null; }
    state.current = id;
    Array.prototype.forEach.call($("list").children, function (li) {
      li.classList.toggle("selected", li.getAttribute("data-id") === id);
      if (li.getAttribute("data-id") === id) {
        var badge = li.querySelector(".unread");
        if (badge) { badge.remove(); li.drawn = null; }  // changed here: fillRow draws it whole next time
        if (li.scrollIntoView) { li.scrollIntoView({ block: "nearest" }); }
      }
    });
    sendView(false);
    renderPresence();
    return refreshConversation();
  }

  function refreshConversation() {
    var id = state.current;
    if (!id) { return Promise.resolve(); }
    return api("GET", "/agent/api/conversations/" + encodeURIComponent(id)).then(function (data) {
      if (state.current !== id) { return; }
      var c = data.conversation;
      $("open-error").hidden = true;
      $("empty").hidden = true;
      $("conversation").hidden = false;
      $("conversation").setAttribute("data-id", c.id);
      $("conv-title").textContent = who(c) + " · " + c.channel;
      var meta = $("conv-meta");
      meta.textContent = "";
      meta.appendChild(tag(c.status, c.status));
      if (c.urgency === "urgent") { meta.appendChild(tag("urgent", "urgent")); }
      if (c.urgency_reason) { meta.appendChild(el("span", "", c.urgency_reason)); }
      if (c.language) { meta.appendChild(tag(c.language)); }
      if (c.topic) { meta.appendChild(tag(c.topic)); }
      if (c.assignee) {
        var assignee = agentOf(c.assignee);
        meta.appendChild(el("span", "assignee-name", "assigned to " + c.assignee +
          (assignee.name !== c.assignee ? " (" + assignee.name + ")" : "")));
      }
      if (c.waiting_since_ms) { meta.appendChild(el("span", "waiting", waitingText(c))); }
      if (c.due_ms) { meta.appendChild(el("span", "due" + (c.due_ms < nowMs() ? " overdue" : ""), dueText(c))); }
      if (c.email) { meta.appendChild(el("span", "", c.email)); }
      if (c.claimed_email && c.claimed_email !== c.email) {
        meta.appendChild(el("span", "claimed", "says: " + c.claimed_email + " (unconfirmed)"));
        var link = el("button", "link", "Confirmed: link to " + c.claimed_email);
        link.type = "button";
        link.id = "link-email";
        link.title = "Only after you made sure this is their address: joins the contact that has it";
        link.addEventListener("click", function () {
          api("POST", "/agent/api/conversations/" + encodeURIComponent(c.id) + "/link", { email: c.claimed_email })
            .catch(function (err) { $("reply-error").textContent = err.message; });
        });
        meta.appendChild(link);
      }
      if (c.unreachable) { meta.appendChild(el("span", "error", "unreachable: " + c.unreachable)); }
      $("resolve").hidden = c.status === "resolved";
      $("reopen").hidden = c.status !== "resolved";
      $("claim").hidden = c.assignee === state.me;
      if (state.language !== c.language) { state.language = c.language; fillCanned(); }
      window.BridgeTranslation.conversation(c);
      var list = $("transcript");
      var atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
      list.textContent = "";
      (data.transcript || []).forEach(function (m) {
        var li = el("li");
        li.setAttribute("data-who", m.who);
        li.setAttribute("data-id", m.id);
        if (m.who === "system") {
          var label = Object.prototype.hasOwnProperty.call(NOTICE_LABELS, m.event) ? NOTICE_LABELS[m.event] :
            (m.event || m.kind) + (m.status ? " " + m.status : "");
          li.setAttribute("data-event", m.event || m.kind);
          var said = m.text || "";
          // a notice whose text already names it ("SLA warning: ...") is not labelled twice
          if (label && said.toLowerCase().indexOf(label.toLowerCase()) === 0) { label = ""; }
          li.textContent = (label && said ? label + ": " : label) + said + " · " +
            new Date(m.ts).toLocaleTimeString();
        } else {
          var label = m.who === "customer" ? "customer" : m.who === "bot" ? "bot" :
            m.who === "note" ? "note" + (m.name ? " by " + m.name : "") : (m.name || "agent");
          li.appendChild(el("div", "by", label + " · " + new Date(m.ts).toLocaleTimeString()));
          li.appendChild(el("div", "text", m.text));
          window.BridgeTranslation.decorate(li, m);
          (m.attachments || []).forEach(function (a) {
            var label = (a.name || "file") + (a.size ? " (" + Math.ceil(a.size / 1024) + " KB)" : "");
            var link = el(a.url ? "a" : "span", "attachment", label);
            if (a.url) {  // http(s) only: the server sends no other
              link.href = a.url;
              link.target = "_blank";
              link.rel = "noopener noreferrer";
            }
            li.appendChild(link);
          });
        }
        list.appendChild(li);
      });
      if (atBottom) { list.scrollTop = list.scrollHeight; }
      document.dispatchEvent(new CustomEvent("console:conversation", { detail: c }));  // contacts.js
    }).catch(function (err) {
      if (err.status === 404) {
        state.current = null; $("conversation").hidden = true; $("empty").hidden = false;
        document.dispatchEvent(new CustomEvent("console:conversation", { detail: null }));
      } else if (state.current === id && $("conversation").getAttribute("data-id") !== id) {
        // never shown (a case only the record holds, the record away): say so; a refresh
        // of a case on screen that fails once keeps what is shown
        $("conversation").hidden = true; $("empty").hidden = true;
        $("open-error").textContent = "This conversation cannot be opened just now: " + err.message;
        $("open-error").hidden = false;
      }
    });
  }
  // another part of the page (the contact panel) asks to open a conversation
  document.addEventListener("console:open", function (event) { open(event.detail); });

  function newClientId() {
    var bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  $("reply-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = $("reply-text").value.trim();
    if (!text || !state.current) { return; }
    $("reply-send").disabled = true;
    api("POST", "/agent/api/conversations/" + encodeURIComponent(state.current) + "/reply",
        { text: text, client_id: newClientId(), translate: window.BridgeTranslation.wanted() }).then(function () {
      $("reply-text").value = "";
      $("reply-error").textContent = "";
      sendView(false);
    }).catch(function (err) { $("reply-error").textContent = err.message; })
      .then(function () { $("reply-send").disabled = false; });
  });
  $("reply-text").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { $("reply-form").requestSubmit(); }
    if (event.key === "Escape") { $("reply-text").blur(); }
  });
  $("reply-text").addEventListener("input", function () {
    if (Date.now() - state.lastTyping > 2000) { state.lastTyping = Date.now(); sendView(true); }
  });
  $("note-send").addEventListener("click", function () {
    var text = $("reply-text").value.trim();
    if (!text || !state.current) { return; }
    api("POST", "/agent/api/conversations/" + encodeURIComponent(state.current) + "/note", { text: text })
      .then(function () { $("reply-text").value = ""; $("reply-error").textContent = ""; })
      .catch(function (err) { $("reply-error").textContent = err.message; });
  });
  ["resolve", "reopen", "claim"].forEach(function (name) {
    $(name).addEventListener("click", function () {
      if (!state.current) { return; }
      api("POST", "/agent/api/conversations/" + encodeURIComponent(state.current) + "/" + name, {})
        .catch(function (err) { $("reply-error").textContent = err.message; });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("#filters button"), function (button) {
    button.addEventListener("click", function () {
      state.status = button.getAttribute("data-status");
      Array.prototype.forEach.call(document.querySelectorAll("#filters button"), function (b) { b.classList.toggle("active", b === button); });
      refreshList();
    });
  });

  // -- live updates: a WebSocket nudge, and polling as a fallback ---------------------------
  function scheduleRefresh() {
    if (state.refreshTimer) { return; }
    state.refreshTimer = setTimeout(function () {
      state.refreshTimer = null;
      refreshList();
      refreshConversation();
    }, 100);
  }

  function startLive() {
    var socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/agent/ws");
    state.ws = socket;
    socket.onopen = function () { $("live").classList.add("on"); sendView(false); scheduleRefresh(); };
    socket.onmessage = function (event) {
      var frame = {};
      try { frame = JSON.parse(event.data); } catch (e) { /* a nudge all the same */ }
      if (frame.type === "presence") { onPresence(frame); } else { scheduleRefresh(); }
    };
    socket.onclose = function () {
      $("live").classList.remove("on");
      if (state.ws === socket) { state.ws = null; setTimeout(function () { if (!$("app").hidden) { startLive(); } }, 2000); }
    };
    if (!state.pollTimer) { state.pollTimer = setInterval(scheduleRefresh, state.pollS * 1000); }
    if (!state.viewTimer) {  // presence is renewed while the page is open; a closed page's expires
      state.viewTimer = setInterval(function () { sendView(false); refreshTimes(); }, state.presenceTtlS * 1000 / 3);
    }
  }

  function stopLive() {
    if (state.ws) { var s = state.ws; state.ws = null; s.close(); }
    if (state.pollTimer) { clearInterval(state.pollTimer); state.pollTimer = null; }
    if (state.viewTimer) { clearInterval(state.viewTimer); state.viewTimer = null; }
  }

  // -- presence: who else views or types in a case -----------------------------------------
  function sendView(typing) {
    if (!state.ws || state.ws.readyState !== 1) { return; }
    state.ws.send(JSON.stringify({ type: "view", conversation_id: state.current || "", typing: !!typing }));
  }

  function onPresence(frame) {
    var others = (frame.viewers || []).filter(function (v) { return v.agent !== state.me; });
    others.forEach(function (v) { v.typingUntil = v.typing ? Date.now() + TYPING_SHOWN_MS : 0; });
    state.presence[frame.conversation_id] = others;
    if (others.some(function (v) { return v.typing; })) { setTimeout(renderPresence, TYPING_SHOWN_MS + 50); }
    renderPresence();
    var row = $("list").querySelector('li[data-id="' + CSS.escape(frame.conversation_id) + '"]');
    var old = row && row.querySelector(".times .viewers");
    if (old) {
      old.parentNode.replaceChild(viewersChip(frame.conversation_id), old);
      row.drawn = null;  // changed here: fillRow draws it whole next time
    }
  }

  function viewersChip(id) {
    var chip = el("span", "viewers");
    (state.presence[id] || []).forEach(function (v) {
      var i = el("span", "initials", v.initials);
      i.title = v.name + " is here";
      chip.appendChild(i);
    });
    return chip;
  }

  function renderPresence() {
    var box = $("presence");
    box.textContent = "";
    (state.presence[state.current] || []).forEach(function (v) {
      var typing = v.typingUntil > Date.now();
      var line = el("span", "viewer" + (typing ? " typing" : ""));
      line.setAttribute("data-agent", v.agent);
      line.appendChild(el("span", "initials", v.initials));
      line.appendChild(document.createTextNode(v.name + (typing ? " is typing…" : " is viewing")));
      box.appendChild(line);
    });
  }

  // -- canned replies: the conversation's language first ------------------------------------
  function cannedOrder() {
    var languages = Object.keys(state.canned);
    var mine = (state.language || "").toLowerCase().split("-")[0];
    languages.sort(function (a, b) { return (a === mine ? 0 : 1) - (b === mine ? 0 : 1) || (a < b ? -1 : a > b ? 1 : 0); });
    return languages;
  }

  function fillCanned() {
    var select = $("canned");
    select.textContent = "";
    var first = el("option", "", "Canned reply…");
    first.value = "";
    select.appendChild(first);
    cannedOrder().forEach(function (language) {
      var group = el("optgroup");
      group.label = language;
      (state.canned[language] || []).forEach(function (reply, i) {
        var o = el("option", "", reply.name);
        o.value = language + ":" + i;
        o.title = reply.text;
        group.appendChild(o);
      });
      select.appendChild(group);
    });
    select.hidden = !Object.keys(state.canned).length;
  }

  $("canned").addEventListener("change", function () {
    var value = $("canned").value;
    $("canned").value = "";
    if (!value) { return; }
    var cut = value.lastIndexOf(":");
    var reply = (state.canned[value.slice(0, cut)] || [])[Number(value.slice(cut + 1))];
    if (!reply) { return; }
    var box = $("reply-text");
    var at = box.selectionStart || 0, end = box.selectionEnd || 0;
    box.value = box.value.slice(0, at) + reply.text + box.value.slice(end);
    box.focus();
    box.selectionStart = box.selectionEnd = at + reply.text.length;
  });

  // -- assignment to a named agent --------------------------------------------------------
  function fillAssign() {
    var select = $("assign");
    select.textContent = "";
    var first = el("option", "", "Assign to…");
    first.value = "";
    select.appendChild(first);
    state.agents.forEach(function (a) {
      var o = el("option", "", a.name + (a.name !== a.login ? " (" + a.login + ")" : "") + (a.online ? " · online" : ""));
      o.value = a.login;
      select.appendChild(o);
    });
  }

  $("assign").addEventListener("change", function () {
    var login = $("assign").value;
    $("assign").value = "";
    if (!login || !state.current) { return; }
    api("POST", "/agent/api/conversations/" + encodeURIComponent(state.current) + "/assign", { assignee: login })
      .catch(function (err) { $("reply-error").textContent = err.message; });
  });

  // -- keyboard shortcuts (listed in the help, "?") -----------------------------------------
  function step(by) {
    if (!state.rows.length) { return; }
    var at = -1;
    state.rows.forEach(function (c, i) { if (c.id === state.current) { at = i; } });
    var next = Math.min(state.rows.length - 1, Math.max(0, at < 0 ? 0 : at + by));
    open(state.rows[next].id);
  }

  function act(name) { if (state.current && !$(name).hidden) { $(name).click(); } }

  var SHORTCUTS = {
    j: function () { step(1); }, k: function () { step(-1); },
    "/": function () { $("search").focus(); $("search").select(); },
    r: function () { if (state.current) { $("reply-text").focus(); } },
    n: function () { if (state.current) { $("reply-text").focus(); } },
    e: function () { act("resolve"); }, o: function () { act("reopen"); }, c: function () { act("claim"); },
    a: function () { if (state.current) { $("assign").focus(); } },
    "?": function () { $("help").hidden = !$("help").hidden; },
    Escape: function () { $("help").hidden = true; }
  };

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
    if (typing || event.ctrlKey || event.metaKey || event.altKey || $("app").hidden) { return; }
    var run = SHORTCUTS[event.key];
    if (run) { event.preventDefault(); run(); }
  });
  $("help-open").addEventListener("click", function () { $("help").hidden = false; });
  $("help-close").addEventListener("click", function () { $("help").hidden = true; });

  function start(me) {
    $("login").hidden = true;
    $("app").hidden = false;
    state.me = me.agent;
    $("me").textContent = me.display_name || me.agent;
    $("me").title = "logged in as " + me.agent + "; customers see " + (me.display_name || me.agent);
    $("me-initials").textContent = me.initials || "";
    state.pollS = me.poll_interval_s || 10;
    state.presenceTtlS = me.presence_ttl_s || 30;
    state.canned = me.canned_replies || {};
    fillCanned();
    window.BridgeTranslation.setup(me.translation);
    var refused = me.refused_origins || [];
    $("origin-warning").hidden = !refused.length;
    $("origin-warning").textContent = refused.length ? "The chat widget was refused on " + refused.slice(0, 5).join(", ") +
      (refused.length > 5 ? " and " + (refused.length - 5) + " more" : "") +
      ": its visitors see \"Offline\". Add the site to channels.widget.allowed_origins if it is yours." : "";
    refreshList();
    startLive();
  }

  // A login link from the bridge's start-up output carries the token in the fragment.
  var match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    history.replaceState(null, "", location.pathname);
    login({ token: decodeURIComponent(match[1]) }, true);
  } else {
    fetch("/agent/api/me", { credentials: "same-origin" }).then(function (response) {
      return response.json().then(function (data) {
        if (response.ok) { start(data); } else { showLogin(data.password_login); }
      });
    }).catch(function () { showLogin(); });
  }
})();
