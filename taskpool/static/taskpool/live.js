/* taskpool's admin pages, kept live from the pool's stream.

   An element with data-live-stream="<stream URL>" makes its page listen to the
   pool's Server-Sent Events with the admin's session (the browser's
   EventSource sends the session cookie). When a message arrives that concerns
   the page (every message for the dashboard; the task and its answers for a
   thread, named by data-live-task), the page fetches itself again and brings
   each of its [data-live="<name>"] parts in line with the fresh one: the
   numbers, lists and charts are the server's, drawn once, in one place. Only
   what differs is changed, in place, so that an element that stays keeps the
   keyboard's focus, a click under way and a selection: a busy pool refreshes
   the page a few times a second. A part marked data-live-keep (a form) stays
   as it is, and goes once the page no longer has it.

   After a dropped connection the browser reconnects by itself and sends
   Last-Event-ID, so the stream replays what was missed; if it gives up (the
   server answered with an error while restarting), a new EventSource resumes
   with ?after=<the last id seen>. Each (re)connection refreshes the page once,
   for what the stream does not carry (a master's stream has no heartbeats);
   data-live-every="<seconds>" refreshes it on a timer too (devices go
   offline as time passes, without a message).

   Once the page itself is refused (its user logged out, or lost the role it
   needs: the stream ends then too), the page stops listening and says it is
   no longer live, rather than show frozen figures as live.
*/
(function () {
  "use strict";

  var root = document.querySelector("[data-live-stream]");
  if (!root || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var streamUrl = root.getAttribute("data-live-stream");
  var taskId = root.getAttribute("data-live-task");
  var every = parseInt(root.getAttribute("data-live-every") || "0", 10);
  var TYPES = ["task", "response", "info", "heartbeat", "error"];
  var lastId = null;
  var source = null;
  var timer = null;
  var busy = false;
  var again = false;
  var updates = 0;
  var ended = false;

  function setStatus(state) {
    var status = document.querySelector("[data-live-status]");
    if (!status) {
      return;
    }
    status.setAttribute("data-live-status", state);
    var labels = status.querySelectorAll("[data-live-label]");
    for (var i = 0; i < labels.length; i++) {
      labels[i].hidden = labels[i].getAttribute("data-live-label") !== state;
    }
  }

  function end() {
    ended = true;
    setStatus("ended");
    if (source) {
      source.close();
    }
  }

  // Makes `node` what `fresh` (of the fetched page) is, changing only what differs: a node
  // of the same kind is kept (its attributes and children brought in line), any other
  // is replaced.
  function morph(node, fresh) {
    if (node.nodeType !== fresh.nodeType || node.nodeName !== fresh.nodeName) {
      node.replaceWith(document.importNode(fresh, true));
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) {
      if (node.nodeValue !== fresh.nodeValue) {
        node.nodeValue = fresh.nodeValue;
      }
      return;
    }
    var i;
    for (i = node.attributes.length - 1; i >= 0; i--) {
      if (!fresh.hasAttribute(node.attributes[i].name)) {
        node.removeAttribute(node.attributes[i].name);
      }
    }
    for (i = 0; i < fresh.attributes.length; i++) {
      var attribute = fresh.attributes[i];
      if (node.getAttribute(attribute.name) !== attribute.value) {
        node.setAttribute(attribute.name, attribute.value);
      }
    }
    var children = node.childNodes;
    var freshChildren = fresh.childNodes;
    for (i = 0; i < freshChildren.length; i++) {
      if (i < children.length) {
        morph(children[i], freshChildren[i]);
      } else {
        node.appendChild(document.importNode(freshChildren[i], true));
      }
    }
    while (children.length > freshChildren.length) {
      node.removeChild(node.lastChild);
    }
  }

  function concerns(message) {
    if (!taskId) {
      return true;
    }
    return message.id === taskId || message.parent_id === taskId;
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    // Named, so that the messages waiting for the next page are not used up here.
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Taskpool-Live": "refresh" },
    })
      .then(function (answer) {
        if (answer.redirected || answer.status === 403) {
          // Sent to the login page, or refused the page: the session no longer has it.
          end();
          throw new Error("the page is refused");
        }
        if (!answer.ok) {
          throw new Error("HTTP " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var parts = document.querySelectorAll("[data-live]");
        for (var i = 0; i < parts.length; i++) {
          var name = parts[i].getAttribute("data-live");
          var fresh = page.querySelector('[data-live="' + name + '"]');
          if (parts[i].hasAttribute("data-live-keep")) {
            // A form someone may be filling in: left as it is while the page still has
            // it, removed once it has not (a thread's cancel form, once the task closed).
            if (!fresh) {
              parts[i].remove();
            }
          } else if (fresh) {
            morph(parts[i], fresh);
          }
        }
        updates += 1;
        root.setAttribute("data-live-updates", String(updates));
        document.dispatchEvent(new CustomEvent("taskpool:updated"));
      })
      .catch(function () {
        /* the next message, reconnection or timer tries again */
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          soon();
        }
      });
  }

  // At most one refresh waiting: a busy pool refreshes a few times a second, never
  // once per message, and never waits for a quiet moment that does not come.
  function soon() {
    if (timer !== null) {
      return;
    }
    timer = window.setTimeout(function () {
      timer = null;
      refresh();
    }, 150);
  }

  function received(event) {
    if (event.lastEventId) {
      lastId = event.lastEventId;
    }
    var message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (concerns(message)) {
      soon();
    }
  }

  function connect() {
    if (ended) {
      return;
    }
    var url = streamUrl;
    if (lastId) {
      url += (url.indexOf("?") >= 0 ? "&" : "?") + "after=" + encodeURIComponent(lastId);
    }
    source = new EventSource(url);
    source.onopen = function () {
      setStatus("live");
      soon();
    };
    TYPES.forEach(function (type) {
      if (type !== "error") {
        source.addEventListener(type, received);
      }
    });
    // "error" is both a message type and the EventSource's own failure event.
    source.addEventListener("error", function (event) {
      if (typeof event.data === "string") {
        received(event);
        return;
      }
      if (ended) {
        return;
      }
      setStatus("reconnecting");
      refresh(); // which finds out whether the page itself is refused now
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        window.setTimeout(connect, 2000);
      }
    });
  }

  connect();
  if (every > 0) {
    window.setInterval(function () {
      if (!ended) {
        refresh();
      }
    }, every * 1000);
  }
})();
