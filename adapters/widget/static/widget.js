/*
 * Support chat widget. Embed with one tag, no build step:
 *
 *   <script src="https://bridge.example/widget.js" async
 *           data-title="Acme support" data-color="#1f6feb" data-text-color="#ffffff"
 *           data-lang="en" data-position="right"
 *           data-user-id="42" data-user-hash="<hex HMAC-SHA256 of the id>" data-user-name="Ann"></script>
 *
 * data-bridge overrides the bridge URL (default: where this script came from). Talks only
 * to the bridge; renders every text with textContent, never as HTML. Messages typed while
 * offline wait in localStorage and are sent once when the connection is back (each has a
 * client id the bridge deduplicates on).
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__bridgeWidget) { return; }
  window.__bridgeWidget = true;
  var ds = script.dataset || {};

  var STRINGS = {
    en: { title: "Support", placeholder: "Type your message…", send: "Send", open: "Chat with us",
          close: "Close", connecting: "Connecting…", offline: "Offline: your messages will be sent when the connection is back.",
          sending: "sending…", failed: "not sent", tooLong: "too long", you: "You", agent: "Support",
          greeting: "Hi! How can we help?", yourName: "Your name", yourEmail: "Email (optional)", start: "Start chat", attach: "Attach a file", tooBig: "file too large", badType: "file type not accepted" },
    zh: { title: "客服", placeholder: "请输入消息…", send: "发送", open: "联系我们", close: "关闭",
          connecting: "连接中…", offline: "离线：连接恢复后将发送您的消息。", sending: "发送中…",
          failed: "未发送", tooLong: "太长", you: "您", agent: "客服", greeting: "您好！有什么可以帮您？",
          yourName: "您的姓名", yourEmail: "电子邮箱（可选）", start: "开始聊天", attach: "添加文件", tooBig: "文件太大", badType: "不支持此文件类型" },
    ru: { title: "Поддержка", placeholder: "Введите сообщение…", send: "Отправить", open: "Написать нам",
          close: "Закрыть", connecting: "Подключение…", offline: "Нет связи: сообщения будут отправлены, когда связь восстановится.",
          sending: "отправка…", failed: "не отправлено", tooLong: "слишком длинное", you: "Вы", agent: "Поддержка",
          greeting: "Здравствуйте! Чем можем помочь?", yourName: "Ваше имя", yourEmail: "Email (необязательно)",
          start: "Начать чат", attach: "Прикрепить файл", tooBig: "файл слишком большой", badType: "такой файл не принимается" },
    tl: { title: "Suporta", placeholder: "I-type ang mensahe…", send: "Ipadala", open: "Makipag-chat",
          close: "Isara", connecting: "Kumokonekta…", offline: "Offline: ipapadala ang mga mensahe kapag bumalik ang koneksyon.",
          sending: "ipinapadala…", failed: "hindi naipadala", tooLong: "masyadong mahaba", you: "Ikaw",
          agent: "Suporta", greeting: "Kumusta! Paano kami makakatulong?",
          yourName: "Ang iyong pangalan", yourEmail: "Email (opsyonal)", start: "Simulan ang chat", attach: "Mag-attach ng file", tooBig: "masyadong malaki ang file", badType: "hindi tinatanggap ang uri ng file" },
    ms: { title: "Sokongan", placeholder: "Taip mesej anda…", send: "Hantar", open: "Sembang dengan kami",
          close: "Tutup", connecting: "Menyambung…", offline: "Luar talian: mesej anda akan dihantar apabila sambungan pulih.",
          sending: "menghantar…", failed: "tidak dihantar", tooLong: "terlalu panjang", you: "Anda",
          agent: "Sokongan", greeting: "Hai! Bagaimana kami boleh membantu?",
          yourName: "Nama anda", yourEmail: "E-mel (pilihan)", start: "Mula bersembang", attach: "Lampirkan fail", tooBig: "fail terlalu besar", badType: "jenis fail tidak diterima" }
  };

  var browserLang = (navigator.language || "en");
  var uiLang = String(ds.lang || browserLang).toLowerCase().split("-")[0];
  var t = STRINGS[uiLang] || STRINGS.en;
  var HEX = /^#[0-9a-fA-F]{3,8}$/;
  var color = HEX.test(ds.color || "") ? ds.color : "#1f6feb";
  var textColor = HEX.test(ds.textColor || "") ? ds.textColor : "#ffffff";
  var left = ds.position === "left";
  var base = String(ds.bridge || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var wsUrl = base.replace(/^http/, "ws") + "/widget/ws";
  var storeKey = "bridge-widget:" + base + ":";

  // -- storage (localStorage may be unavailable: private modes, sandboxed frames) -------
  function load(name, fallback) {
    try { var v = localStorage.getItem(storeKey + name); return v === null ? fallback : JSON.parse(v); }
    catch (e) { return fallback; }
  }
  function save(name, value) {
    try { localStorage.setItem(storeKey + name, JSON.stringify(value)); } catch (e) { /* memory only */ }
  }
  function pendingList() { var p = load("pending", []); return Array.isArray(p) ? p : []; }
  function setPending(list) { save("pending", list); }

  function newCid() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // -- DOM (in a shadow root, so the site's styles and ours never meet) -------------------
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  var host = el("div");
  host.id = "bridge-widget";
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  var css = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans',sans-serif}",
    ".bw-bubble{position:fixed;bottom:20px;" + (left ? "left" : "right") + ":20px;width:56px;height:56px;border-radius:50%;border:0;",
    "cursor:pointer;background:" + color + ";color:" + textColor + ";display:flex;align-items:center;justify-content:center;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000}",
    ".bw-badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;border-radius:10px;background:#d1242f;color:#fff;font-size:12px;line-height:20px;padding:0 5px}",
    ".bw-panel{position:fixed;bottom:88px;" + (left ? "left" : "right") + ":20px;width:360px;max-width:calc(100vw - 40px);height:520px;",
    "max-height:calc(100vh - 110px);display:flex;flex-direction:column;background:#fff;border-radius:12px;overflow:hidden;",
    "box-shadow:0 8px 30px rgba(0,0,0,.25);z-index:2147483000;color:#1f2328;font-size:14px}",
    ".bw-panel[hidden]{display:none}",
    ".bw-head{background:" + color + ";color:" + textColor + ";padding:12px 14px;display:flex;align-items:center;gap:8px}",
    ".bw-title{flex:1;font-weight:600;font-size:15px}",
    ".bw-dot{width:8px;height:8px;border-radius:50%;background:#9aa0a6}.bw-dot.on{background:#2da44e}",
    ".bw-x{background:transparent;border:0;color:inherit;font-size:20px;cursor:pointer;line-height:1}",
    ".bw-log{flex:1;overflow-y:auto;padding:12px;background:#f6f8fa;display:flex;flex-direction:column;gap:8px}",
    ".bw-msg{max-width:80%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.35}",
    ".bw-msg[data-from=visitor]{align-self:flex-end;background:" + color + ";color:" + textColor + ";border-bottom-right-radius:4px}",
    ".bw-msg[data-from=agent],.bw-msg[data-from=bot],.bw-msg[data-from=greeting]{align-self:flex-start;background:#fff;border:1px solid #d0d7de;border-bottom-left-radius:4px}",
    ".bw-name{font-size:11px;font-weight:600;opacity:.7;margin-bottom:2px}",
    ".bw-state{font-size:11px;opacity:.75;margin-top:2px;text-align:right}",
    ".bw-msg.failed{background:#ffebe9;color:#82071e}",
    ".bw-buttons{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}",
    ".bw-choice{border:1px solid " + color + ";color:" + color + ";background:#fff;border-radius:14px;padding:4px 10px;cursor:pointer}",
    ".bw-choice:disabled{cursor:default;opacity:.6}.bw-choice.chosen{background:" + color + ";color:" + textColor + ";opacity:1}",
    ".bw-status{font-size:12px;padding:6px 12px;background:#fff8c5;color:#4d2d00}.bw-status[hidden]{display:none}",
    ".bw-form{display:flex;gap:6px;padding:10px;border-top:1px solid #d0d7de;background:#fff}",
    ".bw-input{flex:1;resize:none;height:40px;max-height:120px;padding:9px;border:1px solid #d0d7de;border-radius:8px;font-size:14px}",
    ".bw-prechat{display:flex;flex-direction:column;gap:8px;padding:12px;border-top:1px solid #d0d7de;background:#fff}",
    ".bw-prechat[hidden],.bw-form[hidden]{display:none}",
    ".bw-prechat input{padding:8px;border:1px solid #d0d7de;border-radius:8px;font-size:14px}",
    ".bw-files{display:flex;flex-direction:column;gap:2px;margin-top:4px}.bw-file{color:inherit;text-decoration:underline;font-size:13px}",
    ".bw-attach{background:transparent;border:1px solid #d0d7de;border-radius:8px;cursor:pointer;font-size:16px;padding:0 8px}",
    ".bw-attach[hidden]{display:none}",
    ".bw-send{background:" + color + ";color:" + textColor + ";border:0;border-radius:8px;padding:0 14px;cursor:pointer;font-weight:600}"
  ].join("");
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === "function" && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } else {
    root.appendChild(el("style", "", css));
  }

  var bubble = el("button", "bw-bubble");
  var SVG = "http://www.w3.org/2000/svg";
  var icon = document.createElementNS(SVG, "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("width", "28");
  icon.setAttribute("height", "28");
  icon.setAttribute("aria-hidden", "true");
  var path = document.createElementNS(SVG, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z");
  icon.appendChild(path);
  bubble.appendChild(icon);
  bubble.type = "button";
  bubble.setAttribute("aria-label", t.open);
  var badge = el("span", "bw-badge", "");
  badge.hidden = true;
  bubble.appendChild(badge);
  var panel = el("div", "bw-panel");
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  var head = el("div", "bw-head");
  var dot = el("span", "bw-dot");
  var titleNode = el("span", "bw-title", String(ds.title || t.title));
  var closeBtn = el("button", "bw-x", "×");
  closeBtn.type = "button";
  closeBtn.setAttribute("aria-label", t.close);
  head.appendChild(dot); head.appendChild(titleNode); head.appendChild(closeBtn);
  var statusLine = el("div", "bw-status", t.connecting);
  var log = el("div", "bw-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  var form = el("form", "bw-form");
  var input = el("textarea", "bw-input");
  input.placeholder = t.placeholder;
  input.setAttribute("aria-label", t.placeholder);
  var sendBtn = el("button", "bw-send", t.send);
  sendBtn.type = "submit";
  var attachBtn = el("button", "bw-attach", "\uD83D\uDCCE");
  attachBtn.type = "button";
  attachBtn.title = t.attach;
  attachBtn.setAttribute("aria-label", t.attach);
  attachBtn.hidden = true;  // shown when the bridge says it takes files (welcome.uploads)
  var fileInput = el("input", "bw-file-input");
  fileInput.type = "file";
  fileInput.hidden = true;
  form.appendChild(attachBtn); form.appendChild(fileInput);
  form.appendChild(input); form.appendChild(sendBtn);
  var ask = String(ds.ask || "").toLowerCase().split(/[\s,]+/).filter(Boolean);
  var prechat = el("form", "bw-prechat");
  var nameInput = el("input", "bw-name-input");
  nameInput.placeholder = t.yourName;
  nameInput.setAttribute("aria-label", t.yourName);
  nameInput.required = true;
  nameInput.maxLength = 80;
  var emailInput = el("input", "bw-email-input");
  emailInput.type = "email";
  emailInput.placeholder = t.yourEmail;
  emailInput.setAttribute("aria-label", t.yourEmail);
  emailInput.maxLength = 254;
  var startBtn = el("button", "bw-send bw-start", t.start);
  startBtn.type = "submit";
  if (ask.indexOf("name") >= 0) { prechat.appendChild(nameInput); }
  if (ask.indexOf("email") >= 0) { prechat.appendChild(emailInput); }
  prechat.appendChild(startBtn);
  var profile = load("profile", null);
  var needProfile = ask.length > 0 && !ds.userId && !(profile && profile.name !== undefined);
  prechat.hidden = !needProfile;
  form.hidden = needProfile;
  panel.appendChild(head); panel.appendChild(statusLine); panel.appendChild(log); panel.appendChild(prechat);
  panel.appendChild(form);
  root.appendChild(panel); root.appendChild(bubble);

  var greeting = el("div", "bw-msg", String(ds.greeting || t.greeting));
  greeting.setAttribute("data-from", "greeting");
  greeting._ts = 0;
  log.appendChild(greeting);

  // -- rendering ---------------------------------------------------------------------------
  var byId = {}, byCid = {}, unread = 0;

  function place(node, ts) {
    node._ts = ts || Date.now();
    var children = log.children;
    for (var i = children.length - 1; i >= 0; i--) {
      if ((children[i]._ts || 0) <= node._ts) { log.insertBefore(node, children[i].nextSibling); return; }
    }
    log.insertBefore(node, log.firstChild);
  }

  function setState(node, text, failed) {
    var state = node.querySelector(".bw-state");
    if (!text) { if (state) { node.removeChild(state); } node.classList.remove("failed"); return; }
    if (!state) { state = el("div", "bw-state"); node.appendChild(state); }
    state.textContent = text;
    node.classList.toggle("failed", !!failed);
  }

  function ownMessage(cid, text, ts, fileNames) {
    var node = byCid[cid];
    if (node) { return node; }
    node = el("div", "bw-msg");
    node.setAttribute("data-from", "visitor");
    node.setAttribute("data-cid", cid);
    if (text) { node.appendChild(el("div", "bw-text", text)); }
    if (fileNames && fileNames.length) {
      node.appendChild(files(fileNames.map(function (name) { return { name: name }; })));
    }
    byCid[cid] = node;
    place(node, ts);
    return node;
  }

  // attachments as links (http(s) only, text set with textContent) or, before upload ends, names
  function files(list) {
    var box = el("div", "bw-files");
    list.forEach(function (f) {
      var url = String(f.url || "");
      var link = el(/^https?:\/\//.test(url) ? "a" : "span", "bw-file", "\uD83D\uDCCE " + String(f.name || "file"));
      if (link.tagName === "A") { link.href = url; link.target = "_blank"; link.rel = "noopener noreferrer"; }
      box.appendChild(link);
    });
    return box;
  }

  function render(item) {
    if (!item || typeof item !== "object") { return; }
    if (item.id && byId[item.id]) { return; }
    var node;
    if (item.from === "visitor") {
      node = ownMessage(String(item.cid || item.id), String(item.text || ""), item.ts);
      setState(node, "");
      if (Array.isArray(item.attachments) && item.attachments.length) {
        var old = node.querySelector(".bw-files");
        if (old) { node.removeChild(old); }
        node.appendChild(files(item.attachments));
      }
    } else {
      node = el("div", "bw-msg");
      node.setAttribute("data-from", item.from === "agent" ? "agent" : "bot");
      if (item.name) { node.appendChild(el("div", "bw-name", String(item.name))); }
      node.appendChild(el("div", "bw-text", String(item.text || "")));
      if (Array.isArray(item.attachments) && item.attachments.length) { node.appendChild(files(item.attachments)); }
      if (Array.isArray(item.buttons) && item.buttons.length) {
        var row = el("div", "bw-buttons");
        item.buttons.forEach(function (b) {
          var choice = el("button", "bw-choice", String(b.label || ""));
          choice.type = "button";
          choice.addEventListener("click", function () {
            Array.prototype.forEach.call(row.children, function (other) { other.disabled = true; });
            choice.classList.add("chosen");
            submit(String(b.label || ""), String(b.value || ""));
          });
          row.appendChild(choice);
        });
        node.appendChild(row);
      }
      place(node, item.ts);
      if (panel.hidden) { unread += 1; badge.textContent = String(unread); badge.hidden = false; }
    }
    if (item.id) { byId[item.id] = node; node.setAttribute("data-id", item.id); }
    log.scrollTop = log.scrollHeight;
  }

  // -- connection --------------------------------------------------------------------------
  var ws = null, online = false, attempt = 0, retryTimer = null, stopped = false;

  function setOnline(value) {
    online = value;
    dot.classList.toggle("on", value);
    statusLine.hidden = value;
    statusLine.textContent = value ? "" : (attempt > 1 ? t.offline : t.connecting);
  }

  function scheduleReconnect() {
    if (stopped || retryTimer) { return; }
    var delay = Math.min(4000, 300 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
    attempt += 1;
    retryTimer = setTimeout(function () { retryTimer = null; connect(); }, delay);
  }

  function connect() {
    if (stopped || (ws && (ws.readyState === 0 || ws.readyState === 1))) { return; }
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    var socket;
    try { socket = new WebSocket(wsUrl); } catch (e) { scheduleReconnect(); return; }
    ws = socket;
    socket.onopen = function () {
      var hello = { type: "hello", token: load("token", ""), language: browserLang };
      if (ds.userId) { hello.user_id = ds.userId; hello.user_hash = ds.userHash || ""; }
      if (ds.userName) { hello.name = ds.userName; }
      else if (profile && profile.name) { hello.name = profile.name; }
      if (profile && profile.email) { hello.email = profile.email; }
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      handle(socket, frame);
    };
    socket.onclose = function (event) {
      if (ws === socket) { ws = null; }
      inflight = null;
      setOnline(false);
      if (event.code === 1008 && /identity/.test(event.reason || "")) { stopped = true; return; }
      scheduleReconnect();
    };
  }

  function sendFrame(frame) {
    if (ws && online && ws.readyState === 1) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  // The offline queue is sent one message at a time, oldest first: order is kept, and a
  // long queue never looks like a flood. Each waits for its ack before the next goes.
  var inflight = null;

  function pump() {
    if (inflight || !online) { return; }
    var next = pendingList()[0];
    if (!next) { return; }
    inflight = next.cid;
    if (!sendFrame({ type: "message", cid: next.cid, text: next.text, button: next.button || undefined,
                     files: next.files || undefined })) {
      inflight = null;
    }
  }

  function settled(cid) {
    setPending(pendingList().filter(function (p) { return p.cid !== cid; }));
    if (inflight === cid) { inflight = null; }
    pump();
  }

  function handle(socket, frame) {
    if (frame.type === "welcome") {
      save("token", frame.token);
      uploads = frame.uploads || null;
      attachBtn.hidden = !uploads;
      if (uploads) { fileInput.accept = uploads.types.join(","); }
      attempt = 0;
      (frame.history || []).forEach(render);
      pendingList().forEach(function (p) { setState(ownMessage(p.cid, p.text, p.ts, p.fileNames), t.sending); });
      setOnline(true);
      inflight = null;
      pump();
    } else if (frame.type === "ack") {
      if (byCid[frame.cid]) { setState(byCid[frame.cid], ""); }
      settled(frame.cid);
    } else if (frame.type === "item") {
      render(frame.item);
      if (frame.item && frame.item.from === "visitor" && frame.item.cid) { settled(frame.item.cid); }
    } else if (frame.type === "error" && frame.cid) {
      var cid = frame.cid;
      if (frame.code === "slow_down" || frame.code === "unavailable") {
        setTimeout(function () {
          if (inflight === cid) { inflight = null; pump(); }
        }, Math.max(200, frame.retry_after_ms || 1000));
      } else {
        if (byCid[cid]) { setState(byCid[cid], frame.code === "too_long" ? t.failed + ": " + t.tooLong : t.failed, true); }
        settled(cid);
      }
    }
  }

  function submit(text, button, uploaded) {
    text = String(text || "").trim();
    if (!text && !uploaded) { return; }
    var entry = { cid: newCid(), text: text, ts: Date.now() };
    if (button) { entry.button = button; }
    if (uploaded) { entry.files = [uploaded.id]; entry.fileNames = [uploaded.name]; }
    var list = pendingList();
    list.push(entry);
    setPending(list);
    var node = ownMessage(entry.cid, entry.text, entry.ts, entry.fileNames);
    setState(node, t.sending);
    log.scrollTop = log.scrollHeight;
    if (online) { pump(); } else { connect(); }
  }

  // A file goes up first (it needs the connection: no offline queue for bytes), then a
  // message that names it joins the queue like any other.
  var uploads = null;

  function upload(file) {
    var cid = newCid();
    var node = ownMessage(cid, "", Date.now(), [file.name]);
    log.scrollTop = log.scrollHeight;
    function fail(reason) { setState(node, t.failed + (reason ? ": " + reason : ""), true); }
    if (!uploads || uploads.types.indexOf(file.type) < 0) { fail(t.badType); return; }
    if (file.size > uploads.max_bytes) { fail(t.tooBig); return; }
    setState(node, t.sending);
    fetch(base + "/widget/upload", {
      method: "POST", body: file, mode: "cors", credentials: "omit",
      headers: { "Authorization": "Bearer " + load("token", ""), "Content-Type": file.type,
                 "X-File-Name": encodeURIComponent(file.name) }
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(response.status === 413 ? t.tooBig : response.status === 415 ? t.badType : ""); }
        return body;
      });
    }).then(function (body) {
      node.parentNode.removeChild(node);
      delete byCid[cid];
      submit(input.value, "", body);
      input.value = "";
    }).catch(function (err) { fail(err && err.message); });
  }

  // -- wiring ------------------------------------------------------------------------------
  function setOpen(open) {
    panel.hidden = !open;
    try { sessionStorage.setItem(storeKey + "open", open ? "1" : "0"); } catch (e) { /* ignore */ }
    if (open) {
      unread = 0; badge.hidden = true; log.scrollTop = log.scrollHeight;
      (prechat.hidden ? input : nameInput).focus();
    }
  }
  bubble.addEventListener("click", function () { setOpen(panel.hidden); });
  closeBtn.addEventListener("click", function () { setOpen(false); });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit(input.value);
    input.value = "";
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit(input.value);
      input.value = "";
    }
  });
  attachBtn.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    Array.prototype.forEach.call(fileInput.files || [], upload);
    fileInput.value = "";
  });
  prechat.addEventListener("submit", function (event) {
    event.preventDefault();
    profile = { name: nameInput.value.trim().slice(0, 80), email: emailInput.value.trim().slice(0, 254) };
    save("profile", profile);
    sendFrame({ type: "profile", name: profile.name, email: profile.email });
    prechat.hidden = true;
    form.hidden = false;
    input.focus();
  });
  window.addEventListener("online", connect);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { connect(); } });

  function mount() {
    document.body.appendChild(host);
    var wasOpen = null;
    try { wasOpen = sessionStorage.getItem(storeKey + "open"); } catch (e) { /* ignore */ }
    setOpen(wasOpen === "1" || (wasOpen === null && ds.open === "true"));
    pendingList().forEach(function (p) { setState(ownMessage(p.cid, p.text, p.ts, p.fileNames), t.sending); });
    setOnline(false);
    connect();
  }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
})();
