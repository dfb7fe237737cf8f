/* The agent console. Every text is set with textContent, never parsed as HTML. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var state = { status: "active", current: null, pollTimer: null, refreshTimer: null, ws: null, pollS: 10 };
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

  // -- list --------------------------------------------------------------------------------
  function ago(ms) {
    if (!ms) { return ""; }
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) { return s + "s ago"; }
    if (s < 3600) { return Math.round(s / 60) + "m ago"; }
    if (s < 86400) { return Math.round(s / 3600) + "h ago"; }
    return Math.round(s / 86400) + "d ago";
  }

  /** A person's name, else something shorter than a raw address to tell them apart. */
  function who(c) {
    if (c.customer) { return c.customer; }
    if (c.channel === "widget" && /^v_[0-9a-f]{6}/.test(c.address)) { return "Visitor " + c.address.slice(2, 8); }
    return c.address;
  }

  function tag(text, cls) { return el("span", "tag" + (cls ? " " + cls : ""), text); }

  function refreshList() {
    return api("GET", "/agent/api/conversations?status=" + encodeURIComponent(state.status)).then(function (data) {
      var list = $("list");
      list.textContent = "";
      (data.conversations || []).forEach(function (c) {
        var li = el("li");
        li.setAttribute("data-id", c.id);
        li.setAttribute("data-urgency", c.urgency);
        if (c.id === state.current) { li.className = "selected"; }
        var row1 = el("div", "row1");
        row1.appendChild(el("span", "who", who(c)));
        if (c.urgency === "urgent") { row1.appendChild(tag("urgent", "urgent")); }
        row1.appendChild(tag(c.channel));
        row1.appendChild(tag(c.status, c.status));
        li.appendChild(row1);
        li.appendChild(el("div", "preview", c.preview || ""));
        li.addEventListener("click", function () { open(c.id); });
        list.appendChild(li);
      });
      if (!data.conversations || !data.conversations.length) { list.appendChild(el("li", "empty", "Nothing here.")); }
    }).catch(function () { /* shown by the live dot; retried */ });
  }

  // -- one conversation --------------------------------------------------------------------
  function open(id) {
    state.current = id;
    Array.prototype.forEach.call($("list").children, function (li) {
      li.classList.toggle("selected", li.getAttribute("data-id") === id);
    });
    return refreshConversation();
  }

  function refreshConversation() {
    var id = state.current;
    if (!id) { return Promise.resolve(); }
    return api("GET", "/agent/api/conversations/" + encodeURIComponent(id)).then(function (data) {
      if (state.current !== id) { return; }
      var c = data.conversation;
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
      if (c.assignee) { meta.appendChild(el("span", "", "assigned to " + c.assignee)); }
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
      $("claim").hidden = c.assignee === $("me").textContent;
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
    }).catch(function (err) { $("reply-error").textContent = err.message; })
      .then(function () { $("reply-send").disabled = false; });
  });
  $("reply-text").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { $("reply-form").requestSubmit(); }
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
    socket.onopen = function () { $("live").classList.add("on"); scheduleRefresh(); };
    socket.onmessage = function () { scheduleRefresh(); };
    socket.onclose = function () {
      $("live").classList.remove("on");
      if (state.ws === socket) { state.ws = null; setTimeout(function () { if (!$("app").hidden) { startLive(); } }, 2000); }
    };
    if (!state.pollTimer) { state.pollTimer = setInterval(scheduleRefresh, state.pollS * 1000); }
  }

  function stopLive() {
    if (state.ws) { var s = state.ws; state.ws = null; s.close(); }
    if (state.pollTimer) { clearInterval(state.pollTimer); state.pollTimer = null; }
  }

  function start(me) {
    $("login").hidden = true;
    $("app").hidden = false;
    $("me").textContent = me.agent;
    state.pollS = me.poll_interval_s || 10;
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
