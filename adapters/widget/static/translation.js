/* Translation in the console: a customer message's translation under the original, an
   agent's reply as the customer got it, and the "send in <language>" switch. Every text is
   set with textContent. */
(function () {
  "use strict";
  var settings = { enabled: false, language: "" };
  var names = null;
  try { names = new Intl.DisplayNames(["en"], { type: "language" }); } catch (e) { names = null; }

  function languageName(code) {
    if (!code) { return ""; }
    try { return (names && names.of(code)) || code; } catch (e) { return code; }
  }

  function line(cls, text) {
    var node = document.createElement("div");
    node.className = cls;
    node.textContent = text;
    return node;
  }

  window.BridgeTranslation = {
    setup: function (me) { settings = me || { enabled: false, language: "" }; },

    /** Show the switch when the customer's language is known and not the agent's. */
    conversation: function (c) {
      var toggle = document.getElementById("translate-toggle");
      var other = settings.enabled && c.language && c.language !== settings.language;
      if (toggle.getAttribute("data-conversation") !== c.id) {
        document.getElementById("translate-send").checked = !!other;  // on by default for a foreign customer
        toggle.setAttribute("data-conversation", c.id);
      }
      toggle.hidden = !other;
      document.getElementById("translate-language").textContent = other ? languageName(c.language) : "";
    },

    wanted: function () {
      return !document.getElementById("translate-toggle").hidden && document.getElementById("translate-send").checked;
    },

    /** Under a transcript item: its translation (customer) or what was sent (agent). */
    decorate: function (li, m) {
      var t = m.translation;
      if (t) {
        li.setAttribute("data-translated", t.error ? "failed" : "yes");
        if (t.error) {
          li.appendChild(line("translation failed", "Translation unavailable (" + t.error + "): the original is shown above"));
        } else {
          li.appendChild(line("translation-label", "Translated from " + languageName(t.source || "?") +
            " into " + languageName(t.language)));
          li.appendChild(line("translation", t.text));
        }
      }
      var s = m.sent_as;
      if (s) {
        li.setAttribute("data-sent-as", s.error ? "original" : "translated");
        if (s.error) {
          li.appendChild(line("translation failed", "Translation unavailable (" + s.error + "): sent as written"));
        } else {
          li.appendChild(line("translation-label", "Sent to the customer in " + languageName(s.language) + ":"));
          li.appendChild(line("translation", s.text));
        }
      }
    }
  };
})();
