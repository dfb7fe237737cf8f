/* The console's contact panel: the open conversation's customer as a person. Every text is
   set with textContent, never parsed as HTML. console.js tells this file which conversation
   is open ("console:conversation") and opens one when asked ("console:open"). */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var FIELDS = ["company", "tier", "notes"];
  var state = { conversation: null, contact: null, proposal: null, retry: null };  // retry: the timer of a failed load's next try

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
        if (!response.ok) { var err = new Error(data.error || ("HTTP " + response.status)); err.status = response.status; throw err; }
        return data;
      });
    });
  }

  function ago(ms) {
    if (!ms) { return ""; }
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) { return s + "s ago"; }
    if (s < 3600) { return Math.round(s / 60) + "m ago"; }
    if (s < 86400) { return Math.round(s / 3600) + "h ago"; }
    return Math.round(s / 86400) + "d ago";
  }

  function tag(text, cls) { return el("span", "tag" + (cls ? " " + cls : ""), text); }

  /** "widget:v_c57d7c01…" reads as "widget: visitor c57d7c"; other addresses as they are. */
  function shortAddress(address) {
    var m = /^widget:v_([0-9a-f]{6})/.exec(address);
    return m ? "widget: visitor " + m[1] : address;
  }

  function describe(contact) {
    return contact.name || contact.email || (contact.addresses[0] ? shortAddress(contact.addresses[0]) : contact.id);
  }

  function nameOf(id) {
    var found = (state.contact ? state.contact.contacts : []).filter(function (c) { return c.id === id; })[0];
    return found ? describe(found) : id;
  }

  /** One contact's details, for the side-by-side check before a link. */
  function card(node, view) {
    node.textContent = "";
    var me = view.contacts[0];
    node.appendChild(el("strong", "", describe(me)));
    node.appendChild(el("div", "", "id " + me.id));
    if (me.email) { node.appendChild(el("div", "", me.email)); }
    view.contacts.forEach(function (c) {
      c.addresses.forEach(function (a) { node.appendChild(el("div", "", shortAddress(a))); });
    });
    FIELDS.forEach(function (name) {
      if (view.fields[name]) { node.appendChild(el("div", "", name + ": " + view.fields[name])); }
    });
    node.appendChild(el("div", "", view.conversations.length + " conversation(s)"));
  }

  function fieldsDirty() {
    return FIELDS.some(function (name) {
      var input = $("contact-" + name);
      return document.activeElement === input || input.getAttribute("data-dirty") === "1";
    });
  }

  function render(view) {
    state.contact = view;
    $("contact-panel").hidden = false;
    $("contact-panel").setAttribute("data-contact", view.id);
    $("contact-id").textContent = view.id;
    var whoNode = $("contact-who");
    whoNode.textContent = "";
    var me = view.contacts[0];
    whoNode.appendChild(el("strong", "", me.name || "(no name)"));
    if (me.email) { whoNode.appendChild(el("span", "", me.email)); }
    if (!fieldsDirty()) {
      FIELDS.forEach(function (name) { $("contact-" + name).value = view.fields[name] || ""; });
    }
    var linked = $("contact-linked");
    linked.textContent = "";
    view.contacts.forEach(function (c, i) {
      var li = el("li");
      li.setAttribute("data-contact", c.id);
      var where = c.addresses.map(shortAddress).join(", ");
      li.appendChild(el("span", "", (c.name || c.email ? describe(c) + " · " + where : where || c.id) +
        (i === 0 ? " (this one)" : "")));
      if (i > 0) {
        var unlink = el("button", "unlink", "Unlink");
        unlink.type = "button";
        unlink.title = "Not the same person: take this contact out";
        unlink.addEventListener("click", function () {
          api("DELETE", "/agent/api/contacts/" + encodeURIComponent(view.id) + "/links/" + encodeURIComponent(c.id), {})
            .then(function (data) { render(data.contact); })
            .catch(function (err) { $("contact-error").textContent = err.message; });
        });
        li.appendChild(unlink);
      }
      linked.appendChild(li);
    });
    var list = $("contact-conversations");
    list.textContent = "";
    view.conversations.forEach(function (c) {
      var li = el("li", c.id === state.conversation ? "current" : "");
      li.setAttribute("data-id", c.id);
      li.setAttribute("data-channel", c.channel);
      li.appendChild(tag(c.channel));
      li.appendChild(tag(c.status, c.status));
      if (c.urgency === "urgent") { li.appendChild(tag("urgent", "urgent")); }
      li.appendChild(el("span", "when", ago(c.updated_ms)));
      li.appendChild(el("span", "address", shortAddress(c.channel + ":" + c.address).replace(/^[a-z]+: ?/, "")));
      li.title = "Open this conversation";
      li.addEventListener("click", function () {
        document.dispatchEvent(new CustomEvent("console:open", { detail: c.id }));
      });
      list.appendChild(li);
    });
    var events = $("contact-events");
    events.textContent = "";
    view.events.forEach(function (e) {
      var value = e.value.length > 120 ? e.value.slice(0, 119) + "…" : e.value;
      var what = e.action === "set" ? "set " + e.field + (value ? " to " + value : " (cleared)") :
        e.field === "email" ? "confirmed the email " + e.value + (e.other ? " (joined " + nameOf(e.other) + ")" : "") :
        (e.action === "link" ? "linked " : "unlinked ") + nameOf(e.contact) + " and " + nameOf(e.other);
      events.appendChild(el("li", "", e.agent + " " + what + " · " + new Date(e.at_ms).toLocaleString() +
        (e.via ? " (" + e.via + ")" : "")));
    });
  }

  var RETRY_MS = 3000;  // a panel that could not load (the bridge busy or away) tries again

  function load() {
    var id = state.conversation;
    clearTimeout(state.retry);
    if (!id) { $("contact-panel").hidden = true; return; }
    api("GET", "/agent/api/conversations/" + encodeURIComponent(id) + "/contact").then(function (data) {
      if (state.conversation === id) { $("contact-error").textContent = ""; render(data.contact); }
    }).catch(function (err) {
      if (state.conversation !== id) { return; }
      $("contact-error").textContent = err.message;
      if (!err.status || err.status >= 500) { state.retry = setTimeout(load, RETRY_MS); }
    });
  }

  document.addEventListener("console:conversation", function (event) {
    var c = event.detail;
    var changed = (c ? c.id : null) !== state.conversation;
    state.conversation = c ? c.id : null;
    if (changed) {
      $("contact-error").textContent = "";
      $("contact-saved").textContent = "";
      $("contact-proposal").hidden = true;
      FIELDS.forEach(function (name) { $("contact-" + name).removeAttribute("data-dirty"); });
    }
    load();
  });

  FIELDS.forEach(function (name) {
    $("contact-" + name).addEventListener("input", function () {
      $("contact-" + name).setAttribute("data-dirty", "1");
      $("contact-saved").textContent = "";
    });
  });

  $("contact-fields").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!state.contact) { return; }
    var fields = {};
    FIELDS.forEach(function (name) { fields[name] = $("contact-" + name).value; });
    api("PATCH", "/agent/api/contacts/" + encodeURIComponent(state.contact.id), { fields: fields }).then(function (data) {
      FIELDS.forEach(function (name) { $("contact-" + name).removeAttribute("data-dirty"); });
      $("contact-error").textContent = "";
      render(data.contact);
      $("contact-saved").textContent = "Saved";
    }).catch(function (err) { $("contact-error").textContent = err.message; });
  });

  $("contact-link-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var query = $("contact-link-query").value.trim();
    if (!query || !state.contact) { return; }
    api("GET", "/agent/api/contacts?q=" + encodeURIComponent(query)).then(function (data) {
      var other = data.contact;
      if (other.person === state.contact.person) {
        throw new Error("That contact is already this person.");
      }
      state.proposal = other;
      card($("contact-proposal-this"), state.contact);
      card($("contact-proposal-other"), other);
      $("contact-proposal").hidden = false;
      $("contact-error").textContent = "";
    }).catch(function (err) { $("contact-proposal").hidden = true; $("contact-error").textContent = err.message; });
  });

  $("contact-link-cancel").addEventListener("click", function () {
    state.proposal = null;
    $("contact-proposal").hidden = true;
  });

  $("contact-link-confirm").addEventListener("click", function () {
    if (!state.proposal || !state.contact) { return; }
    api("POST", "/agent/api/contacts/" + encodeURIComponent(state.contact.id) + "/links",
        { contact_id: state.proposal.id, confirmed: true }).then(function (data) {
      state.proposal = null;
      $("contact-proposal").hidden = true;
      $("contact-link-query").value = "";
      $("contact-error").textContent = "";
      render(data.contact);
    }).catch(function (err) { $("contact-error").textContent = err.message; });
  });
})();
